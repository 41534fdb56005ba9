#include <alexnet/image.h>

#include "atomic_file.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <unistd.h>

namespace alexnet::data {
namespace {

[[noreturn]] void fail(const std::string& name, const std::string& why) {
  throw std::runtime_error("image '" + name + "': " + why);
}

uint32_t big_endian(const uint8_t* p, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}

// Width and height from a JPEG's or PNG's header, without decoding; {0, 0} when the
// header does not say (other formats, or a marker we do not walk).
std::pair<int64_t, int64_t> header_size(const std::vector<uint8_t>& b) {
  const size_t n = b.size();
  if (n >= 24 && b[0] == 0x89 && b[1] == 'P' && b[2] == 'N' && b[3] == 'G') {
    return {big_endian(&b[16], 4), big_endian(&b[20], 4)};
  }
  if (n >= 4 && b[0] == 0xFF && b[1] == 0xD8) {
    size_t i = 2;
    while (i + 9 < n) {
      if (b[i] != 0xFF) return {0, 0};
      const uint8_t marker = b[i + 1];
      if (marker == 0xFF) { ++i; continue; }
      const size_t length = big_endian(&b[i + 2], 2);
      // Start-of-frame markers (baseline, progressive, ...), not DHT/JPG/DAC.
      if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
        return {big_endian(&b[i + 7], 2), big_endian(&b[i + 5], 2)};
      }
      i += 2 + length;
    }
  }
  return {0, 0};
}

bool is_jpeg(const std::vector<uint8_t>& b) { return b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }

Image from_mat(const cv::Mat& bgr) {
  Image out;
  out.height = bgr.rows;
  out.width = bgr.cols;
  out.channels = bgr.channels();
  out.pixels.resize(static_cast<size_t>(out.height * out.width * out.channels));
  cv::Mat dst(bgr.rows, bgr.cols, CV_8UC(out.channels), out.pixels.data());
  if (out.channels == 3) {
    cv::cvtColor(bgr, dst, cv::COLOR_BGR2RGB);
  } else {
    bgr.copyTo(dst);
  }
  return out;
}

cv::Mat as_mat(const Image& image) {
  return cv::Mat(static_cast<int>(image.height), static_cast<int>(image.width),
                 CV_8UC(static_cast<int>(image.channels)), const_cast<uint8_t*>(image.pixels.data()));
}

}  // namespace

// Decodes to an 8-bit BGR (or gray) cv::Mat: OpenCV's order, converted once, late.
cv::Mat decode_bgr(const std::vector<uint8_t>& bytes, const std::string& name, int64_t min_side) {
  if (bytes.empty()) fail(name, "the file is empty");
  const auto [width, height] = header_size(bytes);
  if (width * height > kMaxPixels) {
    fail(name, "too large to decode safely (" + std::to_string(width) + "x" + std::to_string(height) + ")");
  }
  int flags = cv::IMREAD_COLOR;
  if (is_jpeg(bytes)) {
    // libjpeg fills a truncated file's missing rows with gray and only warns.
    const uint8_t eoi[2] = {0xFF, 0xD9};
    if (std::search(bytes.rbegin(), bytes.rend(), std::rbegin(eoi), std::rend(eoi)) == bytes.rend()) {
      fail(name, "truncated JPEG (no end-of-image marker)");
    }
    // JPEG decodes at reduced scale for almost nothing: take the largest reduction
    // that keeps the shorter side at least min_side.
    const int64_t shorter = std::min(width, height);
    if (min_side > 0 && shorter > 0) {
      if (shorter >= 8 * min_side) flags = cv::IMREAD_REDUCED_COLOR_8;
      else if (shorter >= 4 * min_side) flags = cv::IMREAD_REDUCED_COLOR_4;
      else if (shorter >= 2 * min_side) flags = cv::IMREAD_REDUCED_COLOR_2;
    }
  } else {
    flags |= cv::IMREAD_ANYDEPTH;  // keep 16-bit samples, to scale them below
  }
  cv::Mat mat;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<uint8_t*>(bytes.data()));
    mat = cv::imdecode(buffer, flags);
  } catch (const cv::Exception& e) {
    fail(name, std::string("cannot decode (") + e.err + ")");
  }
  if (mat.empty()) fail(name, "not a decodable image (corrupt, truncated, or not JPEG/PNG/BMP/WebP/TIFF)");
  if (mat.depth() == CV_16U) {
    mat.convertTo(mat, CV_8U, 1.0 / 257.0);
  } else if (mat.depth() != CV_8U) {
    cv::Mat scaled;
    cv::normalize(mat, scaled, 0, 255, cv::NORM_MINMAX, CV_8U);
    mat = scaled;
  }
  return mat;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) fail(path, "is a folder, not an image file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, std::strerror(errno));
  const std::streamsize size = in.tellg();
  if (size < 0) fail(path, "cannot read");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) fail(path, "cannot read");
  return bytes;
}

// Shorter side to `resize`, then the centre crop written straight into a new Image:
// one pass that also swaps B and R when `bgr`. Area interpolation when shrinking
// (it averages, so it does not alias), bilinear when enlarging.
Image resize_crop(const cv::Mat& src, int64_t resize, int64_t crop, bool bgr) {
  if (src.rows <= 0 || src.cols <= 0) throw std::invalid_argument("resize_and_crop: empty image");
  if (crop > resize) {
    throw std::invalid_argument("resize_and_crop: crop " + std::to_string(crop) + " exceeds resize " +
                                std::to_string(resize));
  }
  const int64_t height = src.rows, width = src.cols;
  const int64_t shorter = std::min(height, width);
  // Rounded, so that a 500x375 image at 256 becomes 341x256.
  const auto scaled = [&](int64_t side) {
    return std::max<int64_t>(resize, (side * resize + shorter / 2) / shorter);
  };
  const int64_t h = height == shorter ? resize : scaled(height);
  const int64_t w = width == shorter ? resize : scaled(width);
  cv::Mat resized = src;
  if (h != height || w != width) {
    const int interpolation = resize < shorter ? cv::INTER_AREA : cv::INTER_LINEAR;
    cv::resize(src, resized, cv::Size(static_cast<int>(w), static_cast<int>(h)), 0, 0, interpolation);
  }
  const cv::Rect centre(static_cast<int>((w - crop) / 2), static_cast<int>((h - crop) / 2),
                        static_cast<int>(crop), static_cast<int>(crop));
  Image out;
  out.height = out.width = crop;
  out.channels = src.channels();
  out.pixels.resize(static_cast<size_t>(crop * crop * out.channels));
  cv::Mat dst(static_cast<int>(crop), static_cast<int>(crop), CV_8UC(static_cast<int>(out.channels)),
              out.pixels.data());
  if (bgr && out.channels == 3) {
    cv::cvtColor(resized(centre), dst, cv::COLOR_BGR2RGB);
  } else {
    resized(centre).copyTo(dst);
  }
  return out;
}

Image decode_image_bytes(const std::vector<uint8_t>& bytes, const std::string& name, int64_t min_side) {
  return from_mat(decode_bgr(bytes, name, min_side));
}

Image decode_image(const std::string& path, int64_t min_side) {
  return decode_image_bytes(read_file(path), path, min_side);
}

Image decode_resized(const std::string& path, int64_t side) {
  return resize_crop(decode_bgr(read_file(path), path, side), side, side, /*bgr=*/true);
}

Image resize_and_crop(const Image& image, int64_t resize, int64_t crop) {
  if (image.height <= 0 || image.width <= 0) throw std::invalid_argument("resize_and_crop: empty image");
  return resize_crop(as_mat(image), resize, crop, /*bgr=*/false);
}

Image to_rgb(Image image) {
  if (image.channels == 3) return image;
  if (image.channels != 1) throw std::invalid_argument("to_rgb: " + std::to_string(image.channels) + " channels");
  Image rgb;
  rgb.height = image.height;
  rgb.width = image.width;
  rgb.channels = 3;
  rgb.pixels.resize(image.pixels.size() * 3);
  for (size_t p = 0; p < image.pixels.size(); ++p) {
    rgb.pixels[3 * p] = rgb.pixels[3 * p + 1] = rgb.pixels[3 * p + 2] = image.pixels[p];
  }
  return rgb;
}

void write_image(const Image& image, const std::string& path) {
  cv::Mat mat = as_mat(image);
  cv::Mat bgr;
  if (image.channels == 3) {
    cv::cvtColor(mat, bgr, cv::COLOR_RGB2BGR);
  } else {
    bgr = mat;
  }
  const auto dot = path.rfind('.');
  const std::string extension = dot == std::string::npos ? ".png" : path.substr(dot);
  std::vector<uint8_t> encoded;
  if (!cv::imencode(extension, bgr, encoded)) fail(path, "cannot encode as " + extension);
  detail::write_file_atomically(path, std::string(encoded.begin(), encoded.end()), "image");
}

}  // namespace alexnet::data
