// IDX files (MNIST's format), gzip'd or plain.
#include "common.h"

#include <alexnet/data/fashion_mnist.h>

#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = alexnet::fuzz::write("data.idx", data, size);
  try {
    const auto idx = alexnet::data::read_idx(path);
    size_t total = 1;
    for (const auto d : idx.dims) total *= static_cast<size_t>(d);
    if (total != idx.data.size()) __builtin_trap();  // the dims must describe the data read
  } catch (const std::exception&) {
  }
  return 0;
}
