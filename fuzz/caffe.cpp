// read_caffe: Caffe's binary NetParameter (current and V1 layers) through protobuf's
// CodedInputStream with every length bounded, and the mapping onto AlexNet's layers.
#include "common.h"

#include <alexnet/interop/caffe.h>

#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = alexnet::fuzz::write("net.caffemodel", data, size);
  try {
    alexnet::read_caffe(path);
  } catch (const std::exception&) {
  }
  return 0;
}
