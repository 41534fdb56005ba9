#include <alexnet/data/source.h>
#include <alexnet/network/numbers.h>

#include "network/file_kind.h"
#include "network/text.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace alexnet {

template <>
const std::vector<std::pair<std::string, data::OnError>>& names<data::OnError>() {
  static const std::vector<std::pair<std::string, data::OnError>> table{{"fail", data::OnError::kFail},
                                                                        {"skip", data::OnError::kSkip}};
  return table;
}

}  // namespace alexnet

namespace alexnet::data {
namespace fs = std::filesystem;
namespace {

std::string lower_extension(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

// An image by its name (the usual extensions, trusted: no read) or else by its first
// bytes (.jfif, .jpe, no extension, a PNG named .dat; GIF too, which the decoder then
// names), so that no image is left out for its name.
bool is_image_file(const fs::path& path) {
  static const std::vector<std::string> known{".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"};
  const auto ext = lower_extension(path);
  if (std::find(known.begin(), known.end(), ext) != known.end()) return true;
  std::ifstream in(path, std::ios::binary);
  char head[12] = {};
  in.read(head, sizeof(head));
  const std::string b(head, static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
  auto starts = [&](const std::string& magic) { return b.compare(0, magic.size(), magic) == 0; };
  return starts("\xFF\xD8\xFF") || starts("\x89PNG\r\n\x1A\n") || starts("GIF87a") || starts("GIF89a") ||
         starts("BM") || starts(std::string("II*\0", 4)) || starts(std::string("MM\0*", 4)) ||
         (starts("RIFF") && b.size() >= 12 && b.compare(8, 4, "WEBP") == 0);
}

bool hidden(const fs::path& path) { return path.filename().string().rfind('.', 0) == 0; }

// A text file's lines, numbered by position (the one reader: BOM and CR removed).
std::vector<std::string> read_lines(const std::string& path, const std::string& what) {
  return detail::all_lines(detail::read_text_file(path, what));
}

// The image files below `dir`, following folder links; a link back to a folder
// already walked (a loop) is not walked again.
void collect_images(const fs::path& dir, std::set<fs::path>& walked, std::vector<std::string>& files,
                    std::vector<std::string>& others) {
  std::error_code error;
  const auto real = fs::canonical(dir, error);
  if (error || !walked.insert(real).second) return;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(dir)) entries.push_back(entry.path());
  for (const auto& path : entries) {
    if (hidden(path)) continue;
    if (fs::is_directory(path, error)) {
      collect_images(path, walked, files, others);
    } else if (fs::is_regular_file(path, error)) {
      (is_image_file(path) ? files : others).push_back(path.string());
    }
  }
}

// Image files listed up front; decoded only when a worker asks.
class FileSource final : public Source {
 public:
  FileSource(std::string name, std::vector<std::string> paths, std::vector<int64_t> labels,
             std::vector<std::string> classes, std::vector<std::string> left_out = {})
      : name_(std::move(name)), paths_(std::move(paths)), labels_(std::move(labels)), classes_(std::move(classes)),
        left_out_(std::move(left_out)) {}

  size_t size() const override { return paths_.size(); }
  int64_t label(size_t index) const override { return labels_.at(index); }
  Image image(size_t index, int64_t side) const override {
    return decode_resized(paths_.at(index), side);
  }
  std::string describe(size_t index) const override { return paths_.at(index); }
  const std::vector<std::string>& classes() const override { return classes_; }
  std::string name() const override { return name_; }
  std::vector<std::string> left_out() const override { return left_out_; }

 private:
  std::string name_;
  std::vector<std::string> paths_;
  std::vector<int64_t> labels_;
  std::vector<std::string> classes_;
  std::vector<std::string> left_out_;
};

// Replaces folder or numeric names by the class-names file's, checking the count.
void apply_class_names(std::vector<std::string>& classes, const std::string& file) {
  if (file.empty()) return;
  auto names = read_lines(file, "class names");
  while (!names.empty() && names.back().empty()) names.pop_back();
  if (names.size() != classes.size()) {
    throw std::runtime_error("class names '" + file + "': " + std::to_string(names.size()) +
                             " names for " + std::to_string(classes.size()) + " classes");
  }
  classes = std::move(names);
}

}  // namespace

std::shared_ptr<Source> open_image_folder(const std::string& root, const ReadOptions& options) {
  std::error_code error;
  if (!fs::is_directory(root, error)) {
    throw std::runtime_error("image folder '" + root + "': " +
                             (fs::exists(root, error) ? "not a folder" : "does not exist"));
  }
  std::vector<fs::path> class_dirs;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory(error) && !hidden(entry.path())) class_dirs.push_back(entry.path());  // links followed
  }
  std::sort(class_dirs.begin(), class_dirs.end());
  if (class_dirs.empty()) {
    throw std::runtime_error("image folder '" + root + "': no class folders (expected root/<class>/<image>)");
  }
  std::vector<std::string> paths, classes, others;
  std::vector<int64_t> labels;
  for (size_t label = 0; label < class_dirs.size(); ++label) {
    std::vector<std::string> files;
    std::set<fs::path> walked;
    collect_images(class_dirs[label], walked, files, others);
    if (files.empty()) {
      throw std::runtime_error("image folder '" + root + "': class folder '" +
                               class_dirs[label].filename().string() + "' has no images");
    }
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      paths.push_back(std::move(f));
      labels.push_back(static_cast<int64_t>(label));
    }
    classes.push_back(class_dirs[label].filename().string());
  }
  apply_class_names(classes, options.class_names());
  std::sort(others.begin(), others.end());
  return std::make_shared<FileSource>(root, std::move(paths), std::move(labels), std::move(classes),
                                      std::move(others));
}

std::string describe_left_out(const Source& source) {
  const auto files = source.left_out();
  if (files.empty()) return "";
  std::map<std::string, size_t> kinds;
  for (const auto& f : files) ++kinds[lower_extension(f)];
  std::string out = "left out " + std::to_string(files.size()) + (files.size() == 1 ? " file" : " files") + " of " +
                    source.name() + " that " + (files.size() == 1 ? "is not an image" : "are not images") + " (";
  bool first = true;
  for (const auto& [ext, n] : kinds) {
    out += (first ? "" : ", ") + std::to_string(n) + " " + (ext.empty() ? "without extension" : ext);
    first = false;
  }
  out += ": ";
  for (size_t i = 0; i < std::min<size_t>(3, files.size()); ++i) out += (i ? ", " : "") + detail::printable(files[i]);
  return out + (files.size() > 3 ? ", ...)" : ")");
}

// ImageNet-21k has 21,841 classes; a label past a million is a damaged line.
constexpr long long kMaxClasses = 1 << 20;

std::shared_ptr<Source> open_image_list(const std::string& list, const ReadOptions& options) {
  // An archive, an image or a page given as the data is named as such, not read as lines.
  if (const auto kind = detail::foreign_file(list, detail::Expected::kListFile); !kind.empty()) {
    throw std::runtime_error("data '" + list + "': " + kind);
  }
  const auto lines = read_lines(list, "list");
  const fs::path root = options.root().empty() ? fs::path(list).parent_path() : fs::path(options.root());
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  int64_t max_label = -1;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& line = lines[i];
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const auto where = "list '" + list + "' line " + std::to_string(i + 1) + ": ";
    // The label is the last field, so paths may hold spaces.
    const auto end = line.find_last_not_of(" \t");
    const auto split = line.find_last_of(" \t", end);
    if (split == std::string::npos) throw std::runtime_error(where + "expected 'path label', got '" + detail::printable(line) + "'");
    const auto label_text = line.substr(split + 1, end - split);
    const auto path = line.substr(0, line.find_last_not_of(" \t", split) + 1);
    const auto read = to_number<int64_t>(label_text);
    const int64_t label = read.value_or(-1);
    if (!read || path.empty()) {
      throw std::runtime_error(where + "expected 'path label', got '" + detail::printable(line) + "'");
    }
    if (label < 0) throw std::runtime_error(where + "label " + label_text + " is negative");
    // A label drives how many classes there are: bounded before anything is sized by it.
    if (label >= kMaxClasses) {
      throw std::runtime_error(where + "label " + label_text + " is above " + std::to_string(kMaxClasses - 1) +
                               " (more classes than any data set; is the last field the label?)");
    }
    paths.push_back((root / path).string());
    labels.push_back(label);
    max_label = std::max<int64_t>(max_label, label);
  }
  if (paths.empty()) throw std::runtime_error("list '" + list + "': no entries");
  std::vector<std::string> classes;
  if (!options.class_names().empty()) {
    const auto names = read_lines(options.class_names(), "class names");
    size_t count = names.size();
    while (count > 0 && names[count - 1].empty()) --count;
    if (static_cast<int64_t>(count) <= max_label) {
      for (size_t i = 0; i < labels.size(); ++i) {
        if (labels[i] >= static_cast<int64_t>(count)) {
          throw std::runtime_error("list '" + list + "': label " + std::to_string(labels[i]) + " of '" +
                                   paths[i] + "' is out of range for the " + std::to_string(count) +
                                   " classes in '" + options.class_names() + "'");
        }
      }
    }
    classes.assign(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(count));
  } else {
    for (int64_t c = 0; c <= max_label; ++c) classes.push_back(std::to_string(c));
  }
  return std::make_shared<FileSource>(list, std::move(paths), std::move(labels), std::move(classes));
}

std::shared_ptr<Source> open_image_files(std::vector<std::string> paths) {
  std::vector<int64_t> labels(paths.size(), 0);
  return std::make_shared<FileSource>("image files", std::move(paths), std::move(labels), std::vector<std::string>{});
}

namespace {

// A source whose labels are another list's classes (match_classes).
class RelabeledSource final : public Source {
 public:
  RelabeledSource(std::shared_ptr<Source> source, std::vector<int64_t> to, std::vector<std::string> classes)
      : source_(std::move(source)), to_(std::move(to)), classes_(std::move(classes)) {}
  size_t size() const override { return source_->size(); }
  int64_t label(size_t i) const override { return to_.at(static_cast<size_t>(source_->label(i))); }
  Image image(size_t i, int64_t side) const override { return source_->image(i, side); }
  std::string describe(size_t i) const override { return source_->describe(i); }
  const std::vector<std::string>& classes() const override { return classes_; }
  std::string name() const override { return source_->name(); }

 private:
  std::shared_ptr<Source> source_;
  std::vector<int64_t> to_;
  std::vector<std::string> classes_;
};

}  // namespace

std::shared_ptr<Source> match_classes(std::shared_ptr<Source> source, const std::vector<std::string>& classes,
                                      std::string* note) {
  const auto what = source->name();
  const auto& own = source->classes();
  if (own == classes) return source;
  bool indices = true;
  for (size_t c = 0; c < own.size() && indices; ++c) indices = own[c] == std::to_string(c);
  std::vector<int64_t> to(own.size(), -1);
  if (indices) {
    if (own.size() > classes.size()) {
      throw std::runtime_error("data '" + what + "': labels go up to " + std::to_string(own.size() - 1) +
                               ", but the model has " + std::to_string(classes.size()) + " classes");
    }
    for (size_t c = 0; c < own.size(); ++c) to[c] = static_cast<int64_t>(c);
  } else {
    std::string unknown;
    size_t count = 0;
    std::vector<std::string> normal;  // compared in NFC: the same name in any Unicode form
    for (const auto& name : classes) normal.push_back(nfc(name));
    for (size_t c = 0; c < own.size(); ++c) {
      const auto found = std::find(normal.begin(), normal.end(), nfc(own[c]));
      if (found == normal.end()) {
        if (++count <= 5) unknown += (unknown.empty() ? "'" : ", '") + detail::printable(own[c]) + "'";
        continue;
      }
      to[c] = found - normal.begin();
    }
    if (count > 0) {
      throw std::runtime_error("data '" + what + "': " + std::to_string(count) + " of its classes (" + unknown +
                               (count > 5 ? ", ..." : "") + ") are not among the model's " +
                               std::to_string(classes.size()) + " classes");
    }
  }
  if (note && own.size() < classes.size()) {
    *note = "data '" + what + "' holds " + std::to_string(own.size()) + " of the model's " +
            std::to_string(classes.size()) + " classes; labels matched by name";
  }
  return std::make_shared<RelabeledSource>(std::move(source), std::move(to), classes);
}

std::shared_ptr<Source> open_source(const std::string& path, const ReadOptions& options) {
  std::error_code error;
  if (fs::is_regular_file(fs::path(path) / "meta.txt", error)) return open_packed(path, options.verify());
  if (fs::is_directory(path, error)) return open_image_folder(path, options);
  if (fs::is_regular_file(path, error)) return open_image_list(path, options);
  throw std::runtime_error("data '" + path + "': does not exist");
}

}  // namespace alexnet::data
