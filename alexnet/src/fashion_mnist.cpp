#include <alexnet/data/fashion_mnist.h>

#include <zlib.h>

#include <filesystem>
#include <stdexcept>

namespace alexnet::data {
namespace {

constexpr uint8_t kUint8Type = 0x08;

std::vector<uint8_t> read_gzip_or_plain(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");  // reads plain files as they are
  if (!file) throw std::runtime_error("IDX file '" + path + "': cannot open");
  std::vector<uint8_t> bytes;
  uint8_t buffer[1 << 16];
  int n = 0;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) bytes.insert(bytes.end(), buffer, buffer + n);
  int error = Z_OK;
  const char* message = gzerror(file, &error);
  gzclose(file);
  if (n < 0 || (error != Z_OK && error != Z_STREAM_END)) {
    throw std::runtime_error("IDX file '" + path + "': corrupt compressed data (" + message + ")");
  }
  return bytes;
}

}  // namespace

Idx read_idx(const std::string& path) {
  const auto bytes = read_gzip_or_plain(path);
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0) {
    throw std::runtime_error("IDX file '" + path + "': wrong magic number (not an IDX file)");
  }
  if (bytes[2] != kUint8Type) throw std::runtime_error("IDX file '" + path + "': data type is not uint8");
  const int rank = bytes[3];
  if (rank < 1 || rank > 4 || bytes.size() < 4 + 4 * size_t(rank)) {
    throw std::runtime_error("IDX file '" + path + "': short or malformed header");
  }
  Idx idx;
  size_t total = 1;
  for (int d = 0; d < rank; ++d) {
    const uint8_t* p = bytes.data() + 4 + 4 * d;
    const int64_t dim = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | p[3];
    idx.dims.push_back(dim);
    total *= static_cast<size_t>(dim);
  }
  const size_t offset = 4 + 4 * size_t(rank);
  if (bytes.size() - offset < total) {
    throw std::runtime_error("IDX file '" + path + "': short file (" + std::to_string(bytes.size() - offset) +
                             " data bytes, the header promises " + std::to_string(total) + ")");
  }
  idx.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(offset),
                  bytes.begin() + static_cast<std::ptrdiff_t>(offset + total));
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
