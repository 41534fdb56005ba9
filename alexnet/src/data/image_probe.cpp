#include "data/image_probe.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace alexnet::data::detail {
namespace {

// Bounds-checked big- and little-endian reads: 0 past the end (callers check sizes).
struct Bytes {
  const uint8_t* p;
  size_t n;
  bool has(size_t at, size_t count) const { return at <= n && count <= n - at; }
  uint64_t be(size_t at, int bytes) const {
    if (!has(at, static_cast<size_t>(bytes))) return 0;
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | p[at + static_cast<size_t>(i)];
    return v;
  }
  uint64_t le(size_t at, int bytes) const {
    if (!has(at, static_cast<size_t>(bytes))) return 0;
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[at + static_cast<size_t>(i)];
    return v;
  }
  bool is(size_t at, const char* text) const {
    const size_t len = std::strlen(text);
    return has(at, len) && std::memcmp(p + at, text, len) == 0;
  }
};

// JPEG: the segments from SOI, each skipped by its length (an EXIF thumbnail's own
// end-of-image marker lies inside one), the entropy-coded data after each start of
// scan (stuffed 0xFF00 bytes and restart markers belong to it), until the end-of-image
// marker. Data that ends first is a cut file.
void probe_jpeg(const Bytes& b, ImageInfo& info) {
  size_t i = 2;
  while (true) {
    while (i < b.n && b.p[i] != 0xFF) ++i;           // bytes between segments: tolerated, as libjpeg does
    while (i + 1 < b.n && b.p[i + 1] == 0xFF) ++i;   // fill bytes
    if (i + 1 >= b.n) {
      info.incomplete = "the JPEG data ends before its end-of-image marker";
      return;
    }
    const uint8_t marker = b.p[i + 1];
    i += 2;
    if (marker == 0xD9) return;                                // end of image
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length
    const size_t length = b.be(i, 2);
    if (length < 2 || !b.has(i, length)) {
      info.incomplete = "the JPEG data ends inside a segment";
      return;
    }
    const bool frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (frame && length >= 7 && info.width == 0) {
      info.height = static_cast<int64_t>(b.be(i + 3, 2));
      info.width = static_cast<int64_t>(b.be(i + 5, 2));
    }
    i += length;
    if (marker == 0xDA) {  // start of scan: entropy-coded data up to the next marker
      while (true) {
        if (i + 1 >= b.n) {
          info.incomplete = "the JPEG data ends inside its image data";
          return;
        }
        if (b.p[i] == 0xFF) {
          const uint8_t next = b.p[i + 1];
          if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
            i += 2;
            continue;
          }
          if (next != 0xFF) break;  // a marker: the scan is over
        }
        ++i;
      }
    }
  }
}

// PNG: chunks (length, type, data, CRC) from the signature to IEND.
void probe_png(const Bytes& b, ImageInfo& info) {
  size_t i = 8;
  while (true) {
    if (!b.has(i, 12)) {
      info.incomplete = "the PNG data ends before its IEND chunk";
      return;
    }
    const uint64_t length = b.be(i, 4);
    if (b.is(i + 4, "IHDR") && length >= 13) {
      info.width = static_cast<int64_t>(b.be(i + 8, 4));
      info.height = static_cast<int64_t>(b.be(i + 12, 4));
      info.bytes_per_sample = b.be(i + 16, 1) == 16 ? 2 : 1;
    }
    if (length > b.n || !b.has(i + 12, static_cast<size_t>(length))) {
      info.incomplete = "the PNG data ends inside a chunk";
      return;
    }
    if (b.is(i + 4, "IEND")) return;
    i += 12 + static_cast<size_t>(length);
  }
}

// BMP: the pixel array's end follows from the headers for uncompressed bitmaps, and
// from the image size for compressed ones.
void probe_bmp(const Bytes& b, ImageInfo& info) {
  if (!b.has(0, 26)) {
    info.incomplete = "the BMP data ends inside its headers";
    return;
  }
  const uint64_t offset = b.le(10, 4), header = b.le(14, 4);
  uint64_t bits = 0, compression = 0, image_size = 0;
  if (header == 12) {  // OS/2 BITMAPCOREHEADER
    info.width = static_cast<int64_t>(b.le(18, 2));
    info.height = static_cast<int64_t>(b.le(20, 2));
    bits = b.le(24, 2);
  } else {
    if (!b.has(0, 38)) {
      info.incomplete = "the BMP data ends inside its headers";
      return;
    }
    info.width = static_cast<int32_t>(b.le(18, 4));
    info.height = std::abs(static_cast<int64_t>(static_cast<int32_t>(b.le(22, 4))));  // negative: top-down
    bits = b.le(28, 2);
    compression = b.le(30, 4);
    image_size = b.le(34, 4);
  }
  if (info.width <= 0 || info.height <= 0) return;  // the decoder refuses it
  bool cut = false;
  if (compression == 0 || compression == 3 || compression == 6) {
    const uint64_t row = (bits * static_cast<uint64_t>(info.width) + 31) / 32 * 4;
    cut = offset > b.n || (row > 0 && static_cast<uint64_t>(info.height) > (b.n - offset) / row);
  } else if (image_size > 0) {
    cut = offset > b.n || image_size > b.n - offset;
  }
  if (cut) info.incomplete = "the BMP data ends before its last row";
}

// WebP: the RIFF container says how long it is; the first chunk gives the size.
void probe_webp(const Bytes& b, ImageInfo& info) {
  const uint64_t riff = b.le(4, 4);
  if (riff + 8 > b.n) {
    info.incomplete = "the WebP data ends before its RIFF size";
    return;
  }
  if (b.is(12, "VP8 ") && b.has(20, 10)) {
    info.width = static_cast<int64_t>(b.le(26, 2) & 0x3FFF);
    info.height = static_cast<int64_t>(b.le(28, 2) & 0x3FFF);
  } else if (b.is(12, "VP8L") && b.has(21, 4)) {
    const uint64_t bits = b.le(21, 4);
    info.width = static_cast<int64_t>((bits & 0x3FFF) + 1);
    info.height = static_cast<int64_t>(((bits >> 14) & 0x3FFF) + 1);
  } else if (b.is(12, "VP8X") && b.has(24, 6)) {
    info.width = static_cast<int64_t>(b.le(24, 3) + 1);
    info.height = static_cast<int64_t>(b.le(27, 3) + 1);
  }
}

// TIFF: the first image's directory; its strips (or tiles) must lie in the file.
void probe_tiff(const Bytes& b, ImageInfo& info) {
  const bool little = b.p[0] == 'I';
  auto u = [&](size_t at, int bytes) { return little ? b.le(at, bytes) : b.be(at, bytes); };
  const uint64_t ifd = u(4, 4);
  if (ifd > b.n || !b.has(static_cast<size_t>(ifd), 2)) {
    info.incomplete = "the TIFF data ends before its image directory";
    return;
  }
  const uint64_t entries = u(static_cast<size_t>(ifd), 2);
  if (!b.has(static_cast<size_t>(ifd) + 2, static_cast<size_t>(entries) * 12)) {
    info.incomplete = "the TIFF data ends inside its image directory";
    return;
  }
  // One tag's values (SHORT or LONG), inline or at their offset; empty when out of the file.
  auto values = [&](size_t entry, std::vector<uint64_t>& out) {
    const uint64_t type = u(entry + 2, 2), count = u(entry + 4, 4);
    const int size = type == 3 ? 2 : type == 4 ? 4 : 0;
    out.clear();
    if (size == 0 || count == 0 || count > b.n) return false;
    const uint64_t bytes = count * static_cast<uint64_t>(size);
    const uint64_t at = bytes <= 4 ? entry + 8 : u(entry + 8, 4);
    if (at > b.n || !b.has(static_cast<size_t>(at), static_cast<size_t>(bytes))) return false;
    for (uint64_t k = 0; k < count; ++k) out.push_back(u(static_cast<size_t>(at + k * static_cast<uint64_t>(size)), size));
    return true;
  };
  std::vector<uint64_t> offsets, counts, v;
  for (uint64_t e = 0; e < entries; ++e) {
    const size_t entry = static_cast<size_t>(ifd) + 2 + static_cast<size_t>(e) * 12;
    const uint64_t tag = u(entry, 2);
    if (tag == 256 && values(entry, v)) info.width = static_cast<int64_t>(v[0]);
    if (tag == 257 && values(entry, v)) info.height = static_cast<int64_t>(v[0]);
    if (tag == 258 && values(entry, v)) info.bytes_per_sample = v[0] > 8 ? 2 : 1;
    if ((tag == 273 || tag == 324) && !values(entry, offsets)) {
      info.incomplete = "the TIFF data ends before its strip offsets";
      return;
    }
    if ((tag == 279 || tag == 325) && !values(entry, counts)) {
      info.incomplete = "the TIFF data ends before its strip sizes";
      return;
    }
  }
  for (size_t k = 0; k < std::min(offsets.size(), counts.size()); ++k) {
    if (offsets[k] > b.n || counts[k] > b.n - offsets[k]) {
      info.incomplete = "the TIFF data ends before its last strip";
      return;
    }
  }
}

}  // namespace

ImageInfo probe_image(const uint8_t* data, size_t size) {
  const Bytes b{data, size};
  ImageInfo info;
  if (b.has(0, 3) && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    info.format = "jpeg";
    probe_jpeg(b, info);
  } else if (b.is(0, "\x89PNG\r\n\x1a\n")) {
    info.format = "png";
    probe_png(b, info);
  } else if (b.is(0, "BM")) {
    info.format = "bmp";
    probe_bmp(b, info);
  } else if (b.is(0, "RIFF") && b.is(8, "WEBP")) {
    info.format = "webp";
    probe_webp(b, info);
  } else if (b.is(0, "II*") || b.is(0, "MM")) {
    if (b.has(0, 8) && (data[0] == 'I' ? data[2] == 42 && data[3] == 0 : data[2] == 0 && data[3] == 42)) {
      info.format = "tiff";
      probe_tiff(b, info);
    }
  }
  return info;
}

}  // namespace alexnet::data::detail
