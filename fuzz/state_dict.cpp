// read_state_dict: PyTorch's zip format (our bounded zip reader, pickle reader and
// storages) and the legacy format.
#include "common.h"

#include <alexnet/network/pytorch.h>

#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = alexnet::fuzz::write("state_dict.pth", data, size);
  try {
    const auto state = alexnet::read_state_dict(path);
    for (const auto& [name, tensor] : state) (void)tensor.sum().item<double>();  // touch every tensor
  } catch (const std::exception&) {
  }
  return 0;
}
