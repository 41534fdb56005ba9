#pragma once

// Where a data set's examples come from (Section 2): ImageNet-style image folders,
// list files (Caffe's `convert_imageset` format) and packed sets. A source lists
// examples and decodes one on request; it never decodes in its constructor.

#include <alexnet/data/image.h>
#include <alexnet/network/names.h>

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::data {

/// What happens to an image that cannot be read.
enum class OnError {
  kFail,  ///< throw at once, naming the file (default)
  kSkip,  ///< leave it out and count it
};

}  // namespace alexnet::data

namespace alexnet {
template <>
const std::vector<std::pair<std::string, data::OnError>>& names<data::OnError>();  ///< fail, skip
}  // namespace alexnet

namespace alexnet::data {

/// Where the examples of a data set come from: image files or a packed set.
class Source {
 public:
  virtual ~Source() = default;
  virtual size_t size() const = 0;
  virtual int64_t label(size_t index) const = 0;
  /// The image at `index`: decoded and brought to `side` x `side` (shorter side, then
  /// centre crop), RGB. Packed sets store images at their prepared size already.
  virtual Image image(size_t index, int64_t side) const = 0;
  /// A name for messages: the file's path, or the packed set and record.
  virtual std::string describe(size_t index) const = 0;
  virtual const std::vector<std::string>& classes() const = 0;
  /// What the data set is, for messages: its folder, list file or packed set.
  virtual std::string name() const { return "data"; }
  /// Files under an image folder that are not images (by their first bytes, whatever
  /// their names), left out of it; empty for other sources.
  virtual std::vector<std::string> left_out() const { return {}; }
};

/// `name` in Unicode's normalisation form C, the form in which class names are compared
/// wherever they meet (data and a model's classes, fine-tuning's fc8 rows): folders
/// copied from a Mac arrive decomposed (NFD: "e" then a combining accent; Hangul as
/// separate jamo). Text that is not UTF-8 is returned as it is; so is everything in a
/// build without ICU (nfc_available() says which).
std::string nfc(const std::string& name);
bool nfc_available();

/// "" when nothing was left out of `source`; otherwise one line for people: "left out 3
/// files of data/train that are not images (2 .txt, 1 without extension: data/train/a/notes.txt, ...)".
std::string describe_left_out(const Source& source);

/// Options for reading image files.
struct ReadOptions {
  /// A file with one human-readable class name per line, in label order (optional).
  TORCH_ARG(std::string, class_names) = "";
  /// Root that the paths in a list file are relative to (default: the list's folder).
  TORCH_ARG(std::string, root) = "";
  /// Packed sets: check each record's checksum when it is first read (`open_packed`).
  TORCH_ARG(bool, verify) = true;
};

/// `root/<class>/<image>`: classes are the sorted folder names (as torchvision's
/// ImageFolder). Lists files only; decodes nothing.
std::shared_ptr<Source> open_image_folder(const std::string& root, const ReadOptions& options = {});
/// Lines "relative/path label" (Caffe's convert_imageset format).
std::shared_ptr<Source> open_image_list(const std::string& list, const ReadOptions& options = {});
/// Image files named one by one (a command line's), all labelled 0, no class names.
std::shared_ptr<Source> open_image_files(std::vector<std::string> paths);
/// A packed set written by `write_packed` (`alexnet prepare`, the Fashion-MNIST
/// importer). With `verify`, each record's checksum is checked the first time this
/// process reads it (a corrupt byte stops the reader, naming the shard and record);
/// without, nothing is checked past the shards' sizes and end markers.
std::shared_ptr<Source> open_packed(const std::string& dir, bool verify = true);
/// Any of the three, by what `path` is: a packed set's folder, an image folder or a list file.
std::shared_ptr<Source> open_source(const std::string& path, const ReadOptions& options = {});

/// `source` with its labels mapped to `classes` (a model's, in its output order) by
/// name: a data set may hold any subset of the classes, in any order. A class the
/// model does not know is refused, naming it and the data. A source whose classes are
/// plain indices ("0", "1", ...: a list file without class names) is taken by index,
/// each label checked against the number of classes. `note`, when given, says how many
/// of the classes the data holds when it is not all of them.
std::shared_ptr<Source> match_classes(std::shared_ptr<Source> source, const std::vector<std::string>& classes,
                                      std::string* note = nullptr);

}  // namespace alexnet::data
