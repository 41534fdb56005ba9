#pragma once

// IDX files (the MNIST format) and Fashion-MNIST, the quickstart's data set.

#include <alexnet/data/packed.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::data {

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

}  // namespace alexnet::data
