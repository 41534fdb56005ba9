// Checkpoints: LibTorch's archive, the model options (JSON, and the first format's
// text), the extras of both formats, the weights' checks, and the preprocessing that
// inference reads.
#include "common.h"

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/model.h>
#include <alexnet/network/preprocessing.h>

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
    (void)alexnet::AlexNetOptions::from_json(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const std::exception&) {
  }
  return 0;
}
