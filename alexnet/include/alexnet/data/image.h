#pragma once

// Image decoding and the paper's resizing (Section 2), without LibTorch or OpenCV in
// the interface. Implemented with OpenCV in the `alexnet_data` target.

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet::data {

/// A decoded image: height x width x channels (3: RGB, 1: gray), uint8, row-major,
/// channels interleaved.
struct Image {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  std::vector<uint8_t> pixels;

  const uint8_t* at(int64_t y, int64_t x) const { return pixels.data() + (y * width + x) * channels; }
};

/// Images whose header gives more pixels than this are refused before decoding
/// (decompression bombs).
constexpr int64_t kMaxPixels = int64_t(1) << 28;  // 268 megapixels
/// When a side is asked for (`decode_resized`, every data set), images whose decoded
/// samples, at the scale they are decoded at, take more than this (a 24-megapixel PNG
/// from a camera, a 36-megapixel panorama, a 12-megapixel 16-bit TIFF scan; JPEG decodes
/// at 1/2, 1/4 or 1/8 scale and rarely gets here) are decoded one at a time across all
/// the process's decoding threads, each held only until it is brought to that side.
/// Memory is then bounded by what the pipeline keeps plus one such image (at most
/// kMaxPixels of 16-bit RGB: 1.5 GiB), never by how many arrive together.
constexpr int64_t kMaxDecodedBytes = int64_t(64) << 20;

/// Decodes an image file (JPEG, PNG, BMP, WebP, TIFF) to 8-bit RGB: gray and palette
/// images become RGB, alpha is dropped, 16-bit samples are scaled to 8 bits, EXIF
/// orientation is applied. When `min_side` > 0, a JPEG whose shorter side is at least
/// twice that is decoded at 1/2, 1/4 or 1/8 scale, never below `min_side`. Throws
/// std::runtime_error naming the path and the reason: missing, empty, not an image,
/// corrupt, truncated (its data ends before the end its format marks: a JPEG's
/// end-of-image marker after its last scan, a PNG's IEND chunk, a BMP's last row, a
/// WebP's RIFF size, a TIFF's last strip), too large.
Image decode_image(const std::string& path, int64_t min_side = 0);

/// The same for bytes already in memory; `name` is used in messages.
Image decode_image_bytes(const std::vector<uint8_t>& bytes, const std::string& name, int64_t min_side = 0);

/// Decodes (at reduced scale where it can) and brings the image to `side` x `side`
/// RGB: what `decode_image` then `resize_and_crop(image, side, side)` give, in fewer
/// passes over the pixels, and within kMaxDecodedBytes.
Image decode_resized(const std::string& path, int64_t side);

/// Shorter side to `resize`, then the central `crop` x `crop` square (Section 2: 256
/// and 256). Area interpolation when shrinking, bilinear when enlarging. Gray stays gray.
/// An image longer than 4 times its width (or the reverse) has its central square cut
/// first and then resized, so that a 1x20000 strip is not enlarged whole to 256x5120000.
Image resize_and_crop(const Image& image, int64_t resize, int64_t crop);

/// The image with three channels: gray is repeated, RGB returned as it is.
Image to_rgb(Image image);

/// Writes an RGB or gray image as PNG or JPEG (by extension), atomically.
void write_image(const Image& image, const std::string& path);

}  // namespace alexnet::data
