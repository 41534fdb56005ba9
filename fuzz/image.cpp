// The decode-and-resize path every data set takes: our structural probe (cut files,
// sizes), OpenCV's decoders, the reduced-scale and memory checks, resize and crop.
#include "common.h"

#include <alexnet/data/image.h>

#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = alexnet::fuzz::write("image", data, size);
  try {
    const auto image = alexnet::data::decode_resized(path, 32);
    if (image.width != 32 || image.height != 32 || image.channels != 3) __builtin_trap();
  } catch (const std::exception&) {
  }
  return 0;
}
