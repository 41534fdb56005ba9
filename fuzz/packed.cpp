// Packed sets: meta.txt, classes.txt and a shard, read and every record decoded and
// checked. The input is three parts: two lengths (2 bytes each, little-endian), the
// meta.txt and classes.txt they measure, then the shard.
#include "common.h"

#include <alexnet/data/packed.h>

#include <filesystem>
#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const size_t meta = data[0] | (size_t(data[1]) << 8), classes = data[2] | (size_t(data[3]) << 8);
  if (4 + meta + classes > size) return 0;
  const auto dir = alexnet::fuzz::scratch() + "/packed";
  std::filesystem::create_directories(dir);
  alexnet::fuzz::write("packed/meta.txt", data + 4, meta);
  alexnet::fuzz::write("packed/classes.txt", data + 4 + meta, classes);
  alexnet::fuzz::write("packed/shard-00000.bin", data + 4 + meta + classes, size - 4 - meta - classes);
  try {
    const auto source = alexnet::data::open_packed(dir);
    for (size_t i = 0; i < source->size() && i < 64; ++i) {
      (void)source->label(i);
      (void)source->image(i, 16);
    }
  } catch (const std::exception&) {
  }
  try {
    (void)alexnet::data::verify_packed(dir);
  } catch (const std::exception&) {
  }
  return 0;
}
