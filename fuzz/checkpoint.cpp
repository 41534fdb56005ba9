// Checkpoints: LibTorch's archive, our options text and extras, the weights' checks,
// and the preprocessing that inference reads.
#include "common.h"

#include <alexnet/checkpoint.h>
#include <alexnet/preprocessing.h>

#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = alexnet::fuzz::write("checkpoint.pt", data, size);
  try {
    (void)alexnet::read_options(path);
    const auto extras = alexnet::read_extras(path);
    (void)alexnet::Preprocessing::from(extras, path);
  } catch (const std::exception&) {
  }
  try {
    (void)alexnet::options_from_string(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const std::exception&) {
  }
  return 0;
}
