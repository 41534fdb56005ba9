#pragma once

// The data pipeline of Sections 2 and 4.1: ImageNet-style folders, list files and
// packed sets; the paper's preprocessing (shorter side to 256, central 256x256
// crop, mean subtraction at the raw 0..255 scale) and augmentation (random crops,
// horizontal reflections, PCA colour noise), and centre / ten-crop testing.
//
// Decoding uses OpenCV inside the library's `alexnet_data` target; this header
// does not include it. Images are RGB everywhere, uint8 until `normalize`.
//
//   auto source = alexnet::data::open_source("train/");      // folder, list or packed
//   alexnet::data::ImageDataset train(source, alexnet::data::TransformOptions()
//                                                 .stats(stats).seed(1));
//   auto loader = torch::data::make_data_loader(train, EpochSampler(source->size(), 1),
//                                               torch::data::DataLoaderOptions(128).workers(2));
//   for (auto& batch : *loader) {
//     auto x = alexnet::data::normalize(batch, stats, device);  // float, mean subtracted

#include <alexnet/image.h>

#include <torch/arg.h>
#include <torch/data/datasets/base.h>
#include <torch/data/samplers/base.h>
#include <torch/serialize/archive.h>

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace alexnet::data {

/// What happens to an image that cannot be read.
enum class OnError {
  kFail,  ///< throw at once, naming the file (default)
  kSkip,  ///< leave it out and count it
};

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
};

/// Options for reading image files.
struct ReadOptions {
  /// A file with one human-readable class name per line, in label order (optional).
  TORCH_ARG(std::string, class_names) = "";
  /// Root that the paths in a list file are relative to (default: the list's folder).
  TORCH_ARG(std::string, root) = "";
};

/// `root/<class>/<image>`: classes are the sorted folder names (as torchvision's
/// ImageFolder). Lists files only; decodes nothing.
std::shared_ptr<Source> open_image_folder(const std::string& root, const ReadOptions& options = {});
/// Lines "relative/path label" (Caffe's convert_imageset format).
std::shared_ptr<Source> open_image_list(const std::string& list, const ReadOptions& options = {});
/// Image files named one by one (a command line's), all labelled 0, no class names.
std::shared_ptr<Source> open_image_files(std::vector<std::string> paths);
/// A packed set written by `PackedWriter` (`alexnet prepare`, the Fashion-MNIST importer).
std::shared_ptr<Source> open_packed(const std::string& dir);
/// Any of the three, by what `path` is: a packed set's folder, an image folder or a list file.
std::shared_ptr<Source> open_source(const std::string& path, const ReadOptions& options = {});

/// Packed sets: fixed-size uint8 images in shards `shard-NNNNN.bin`, each with its
/// labels, a checksum and an end marker, read by memory mapping; `classes.txt`
/// names the classes and `meta.txt`, written last, says the set is complete. Shards
/// are written to a temporary name and renamed, so none looks complete unless it is.
struct PackedLayout {
  int64_t height = 256;
  int64_t width = 256;
  int64_t channels = 3;
  /// Source examples per shard (a shard holds fewer where images were skipped).
  int64_t records_per_shard = 2048;
};

/// Produces the image (already height x width x channels) and label of one example,
/// or nothing to leave it out. Called from several threads at once.
using Producer = std::function<std::optional<std::pair<Image, int64_t>>(size_t index)>;
/// Reports progress: examples done, and the total.
using Progress = std::function<void(size_t done, size_t total)>;

struct PackedResult {
  size_t records = 0;       ///< in the set
  size_t shards = 0;
  size_t shards_kept = 0;   ///< complete from an earlier, interrupted run
  size_t skipped = 0;       ///< examples left out
};

/// Writes `count` examples to a packed set in `dir`, producing each with `workers`
/// threads. Shards that an interrupted run finished (and whose checksums hold) are
/// kept, not redone.
PackedResult write_packed(const std::string& dir, size_t count, const PackedLayout& layout,
                          const std::vector<std::string>& classes, const Producer& produce,
                          int64_t workers = 2, const Progress& progress = {});

/// `alexnet prepare`: decodes every image of `source` once, brings it to `side` x
/// `side` (shorter side, centre crop) and packs it.
PackedResult prepare_packed(const Source& source, const std::string& dir, int64_t side = 256,
                            int64_t workers = 2, OnError on_error = OnError::kFail,
                            const Progress& progress = {});

/// Recomputes every shard's checksum; throws naming the first shard that fails.
void verify_packed(const std::string& dir);

/// An IDX file (the MNIST format): dimensions and uint8 data.
struct Idx {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

/// Reads an IDX file, gzip-compressed or not. Throws naming the file on a wrong magic
/// number, a non-uint8 type, or data shorter than the dimensions say.
Idx read_idx(const std::string& path);

/// Fashion-MNIST's ten class names, in label order.
const std::vector<std::string>& fashion_mnist_classes();

/// Where Debian's `dataset-fashion-mnist` puts the IDX files.
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Imports Fashion-MNIST's IDX files (train-images-idx3-ubyte.gz, ...) from `from`
/// into the packed sets `out/train` and `out/test`, at the native 28x28 gray: the
/// pipeline resizes and makes them RGB. Throws on malformed files or a count mismatch
/// between images and labels.
std::pair<PackedResult, PackedResult> import_fashion_mnist(const std::string& from, const std::string& out);

/// The statistics of Section 2 and 4.1(b): the mean image, per-channel means, and the
/// principal components of the RGB values over the training set.
struct Statistics {
  torch::Tensor mean_image;   ///< float64 [3, S, S], 0..255 scale
  torch::Tensor mean_rgb;     ///< float64 [3]
  torch::Tensor eigenvalues;  ///< float64 [3], descending
  torch::Tensor eigenvectors; ///< float64 [3, 3], rows are eigenvectors
  int64_t images = 0;

  std::string to_json() const;
  void save(const std::string& path) const;  ///< atomically
  static Statistics load(const std::string& path);
};

/// One pass over `source` with `workers` threads, accumulating in double.
Statistics compute_statistics(const Source& source, int64_t side = 256, int64_t workers = 2,
                              OnError on_error = OnError::kFail, int64_t* skipped = nullptr);

enum class Mode {
  kTrain,    ///< random crop, random reflection, PCA colour noise (Section 4.1)
  kCenter,   ///< the central crop
  kTenCrop,  ///< four corners and centre, and their reflections (Section 4.1)
};

struct TransformOptions {
  TransformOptions() = default;
  /// Side the images are brought to before cropping (Section 2: 256).
  TORCH_ARG(int64_t, resize) = 256;
  /// Side of the crops the network sees (227; the paper's text says 224).
  TORCH_ARG(int64_t, crop) = 227;
  TORCH_ARG(Mode, mode) = Mode::kTrain;
  /// Standard deviation of the PCA noise's alpha (Section 4.1(b): 0.1); 0 disables it.
  TORCH_ARG(double, pca_std) = 0.1;
  /// Random reflections in training.
  TORCH_ARG(bool, flip) = true;
  /// Seeds every random draw; with the epoch and index it fixes an example's crop,
  /// reflection and colour noise whatever the number of workers.
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(OnError, on_error) = OnError::kFail;
};

/// A batch as the workers assemble it: uint8 images, labels, and each image's PCA
/// colour offset (added in `normalize`, so pixels stay uint8 until then).
struct Batch {
  torch::Tensor images;  ///< uint8 [B, 3, crop, crop]; [B * 10, ...] for ten-crop
  torch::Tensor labels;  ///< int64 [B]
  torch::Tensor colour;  ///< float32 [B, 3] (zeros outside training)
  std::vector<size_t> indices;
  int64_t skipped = 0;   ///< images left out (OnError::kSkip)
};

/// The data set as LibTorch's data loader uses it: `get_batch` decodes, transforms
/// and packs a batch on a worker thread.
class ImageDataset : public torch::data::datasets::BatchDataset<ImageDataset, Batch> {
 public:
  ImageDataset(std::shared_ptr<Source> source, TransformOptions options,
               std::optional<Statistics> stats = std::nullopt);

  Batch get_batch(c10::ArrayRef<size_t> indices) override;
  torch::optional<size_t> size() const override;

  /// The epoch that seeds the random draws; set it before each epoch.
  void set_epoch(int64_t epoch);
  const Source& source() const { return *source_; }
  const TransformOptions& options() const { return options_; }

 private:
  std::shared_ptr<Source> source_;
  TransformOptions options_;
  std::optional<Statistics> stats_;
  std::shared_ptr<std::atomic<int64_t>> epoch_;
};

/// Float images with the per-channel mean subtracted (raw 0..255 scale, Section 2)
/// and the PCA colour offsets added, on `device`: the uint8 batch is copied first, so
/// the conversion runs there.
torch::Tensor normalize(const Batch& batch, const Statistics& stats, const c10::Device& device);

/// The order of an epoch: a permutation seeded by (seed, epoch), the same however
/// many workers read it, split into `world` disjoint shards of which this process
/// reads shard `rank` (data parallelism): positions rank, rank + world, ... of the
/// permutation, so that step s of the `world` shards together is step s of one process
/// with `world` times the batch. Shards are equal (size / world examples; the
/// remainder of each epoch's permutation is left out) so every process takes the
/// same number of steps. Without shuffling, the natural order.
class EpochSampler : public torch::data::samplers::Sampler<std::vector<size_t>> {
 public:
  EpochSampler(size_t size, uint64_t seed, bool shuffle = true, size_t rank = 0, size_t world = 1);
  /// The epoch to draw; `skip` leaves out its first examples (resuming mid-epoch).
  void set_epoch(int64_t epoch, size_t skip = 0);
  void reset(torch::optional<size_t> new_size = torch::nullopt) override;
  torch::optional<std::vector<size_t>> next(size_t batch_size) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;
  /// Examples this process reads per epoch.
  size_t shard_size() const;

 private:
  size_t size_, rank_, world_;
  uint64_t seed_;
  bool shuffle_;
  int64_t epoch_ = 0;
  std::vector<size_t> order_;
  size_t skip_ = 0;
  size_t position_ = 0;
};

/// 64-bit mixing (splitmix64) of a seed and up to three counters: every random draw
/// in the pipeline comes from such a key, never from a shared generator.
uint64_t mix(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

}  // namespace alexnet::data
