#include <alexnet/data/fashion_mnist.h>

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace alexnet::data {
namespace {

constexpr uint8_t kUint8Type = 0x08;

// IDX files larger than this are refused: the data sets that use the format are tens of
// megabytes, and a corrupt or hostile header (or a gzip bomb) must not allocate without
// bound.
constexpr size_t kMaxIdxBytes = size_t(1) << 30;

// A gzip'd or plain file, read as a stream: no more is ever held than was read.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (!file_) throw std::runtime_error("IDX file '" + path + "': cannot open");
  }
  ~GzReader() { gzclose(file_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  /// Up to `n` bytes appended to `out`; how many came.
  size_t read(std::vector<uint8_t>& out, size_t n) {
    size_t got = 0;
    uint8_t buffer[1 << 16];
    while (got < n) {
      const auto want = static_cast<unsigned>(std::min(n - got, sizeof(buffer)));
      const int r = gzread(file_, buffer, want);
      if (r < 0) {
        int error = Z_OK;
        const char* message = gzerror(file_, &error);
        throw std::runtime_error("IDX file '" + path_ + "': corrupt compressed data (" + message + ")");
      }
      if (r == 0) break;
      out.insert(out.end(), buffer, buffer + r);
      got += static_cast<size_t>(r);
    }
    return got;
  }

 private:
  std::string path_;
  gzFile file_;
};

}  // namespace

Idx read_idx(const std::string& path) {
  GzReader in(path);
  std::vector<uint8_t> header;
  in.read(header, 4);
  if (header.size() < 4 || header[0] != 0 || header[1] != 0) {
    throw std::runtime_error("IDX file '" + path + "': wrong magic number (not an IDX file)");
  }
  if (header[2] != kUint8Type) throw std::runtime_error("IDX file '" + path + "': data type is not uint8");
  const int rank = header[3];
  if (rank < 1 || rank > 4 || in.read(header, 4 * size_t(rank)) < 4 * size_t(rank)) {
    throw std::runtime_error("IDX file '" + path + "': short or malformed header");
  }
  Idx idx;
  size_t total = 1;
  for (int d = 0; d < rank; ++d) {
    const uint8_t* p = header.data() + 4 + 4 * d;
    const int64_t dim = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | p[3];
    idx.dims.push_back(dim);
    if (dim == 0) {
      total = 0;
    } else if (total > kMaxIdxBytes / static_cast<size_t>(dim)) {
      throw std::runtime_error("IDX file '" + path + "': its header promises more than " +
                               std::to_string(kMaxIdxBytes >> 20) + " MiB of data");
    } else {
      total *= static_cast<size_t>(dim);
    }
  }
  const size_t got = in.read(idx.data, total);
  if (got < total) {
    throw std::runtime_error("IDX file '" + path + "': short file (" + std::to_string(got) +
                             " data bytes, the header promises " + std::to_string(total) + ")");
  }
  return idx;
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

std::pair<PackedResult, PackedResult> import_fashion_mnist(const std::string& from, const std::string& out) {
  namespace fs = std::filesystem;
  auto find = [&](const std::string& stem) {
    for (const auto& name : {stem + ".gz", stem}) {
      if (fs::exists(fs::path(from) / name)) return (fs::path(from) / name).string();
    }
    throw std::runtime_error("Fashion-MNIST: no " + stem + "[.gz] in '" + from +
                             "' (Debian's dataset-fashion-mnist installs them in " + kFashionMnistDir + ")");
  };
  auto import = [&](const std::string& prefix, const std::string& dir) {
    const auto images_path = find(prefix + "-images-idx3-ubyte");
    const auto labels_path = find(prefix + "-labels-idx1-ubyte");
    const auto images = read_idx(images_path);
    const auto labels = read_idx(labels_path);
    if (images.dims.size() != 3) throw std::runtime_error("IDX file '" + images_path + "': expected 3 dimensions");
    if (labels.dims.size() != 1) throw std::runtime_error("IDX file '" + labels_path + "': expected 1 dimension");
    if (images.dims[0] != labels.dims[0]) {
      throw std::runtime_error("Fashion-MNIST: " + std::to_string(images.dims[0]) + " images in '" + images_path +
                               "' but " + std::to_string(labels.dims[0]) + " labels in '" + labels_path + "'");
    }
    for (size_t i = 0; i < labels.data.size(); ++i) {
      if (labels.data[i] >= fashion_mnist_classes().size()) {
        throw std::runtime_error("IDX file '" + labels_path + "': label " + std::to_string(labels.data[i]) +
                                 " of image " + std::to_string(i) + " is not one of the 10 classes");
      }
    }
    PackedLayout layout;
    layout.height = images.dims[1];
    layout.width = images.dims[2];
    layout.channels = 1;
    layout.records_per_shard = 10000;
    const size_t bytes = static_cast<size_t>(layout.height * layout.width);
    return write_packed(
        dir, static_cast<size_t>(images.dims[0]), layout, fashion_mnist_classes(),
        [&](size_t i) -> std::optional<std::pair<Image, int64_t>> {
          Image image;
          image.height = layout.height;
          image.width = layout.width;
          image.channels = 1;
          image.pixels.assign(images.data.begin() + static_cast<std::ptrdiff_t>(i * bytes),
                              images.data.begin() + static_cast<std::ptrdiff_t>((i + 1) * bytes));
          return std::make_pair(std::move(image), int64_t(labels.data[i]));
        },
        /*workers=*/1);
  };
  auto train = import("train", (fs::path(out) / "train").string());
  auto test = import("t10k", (fs::path(out) / "test").string());
  return {train, test};
}

}  // namespace alexnet::data
