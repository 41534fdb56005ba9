#pragma once

// Internal: what an image file's own structure says before anything decodes it: its
// format, size and sample depth (so that memory is bounded by what we keep, not by
// what a header claims), and whether its data ends early (decoders fill a cut file's
// missing rows with gray and at most warn). Every read is bounds-checked: the bytes
// are untrusted (fuzzed by fuzz/image_probe.cpp).

#include <cstddef>
#include <cstdint>
#include <string>

namespace alexnet::data::detail {

struct ImageInfo {
  std::string format;          ///< "jpeg", "png", "bmp", "webp", "tiff"; empty: none of them
  int64_t width = 0;           ///< 0 when the header does not say
  int64_t height = 0;
  int64_t bytes_per_sample = 1;  ///< 2 for 16-bit PNG and TIFF
  std::string incomplete;      ///< why the data ends early, or empty
};

ImageInfo probe_image(const uint8_t* data, size_t size);

}  // namespace alexnet::data::detail
