#include <alexnet/data/image.h>

#include "network/atomic_file.h"
#include "network/file_kind.h"
#include "data/image_probe.h"

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
#include <mutex>
#include <stdexcept>
#include <unistd.h>

namespace alexnet::data {
namespace {

[[noreturn]] void fail(const std::string& name, const std::string& why) {
  throw std::runtime_error("image '" + name + "': " + why);
}

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

// Decodes larger than kMaxDecodedBytes take this, one at a time in the process.
std::mutex& large_decodes() {
  static std::mutex one;
  return one;
}

// Decodes to an 8-bit BGR (or gray) cv::Mat: OpenCV's order, converted once, late.
// What the file's structure says is checked first: a cut file is refused (decoders
// fill the missing rows with gray). When a side is asked for and the samples would take
// more than kMaxDecodedBytes at the scale they are decoded at, `hold` receives the lock
// of large decodes: the caller keeps it until the image is brought to that side.
// `path`, when given, is the file the bytes came from: formats that are often stored
// uncompressed (BMP, TIFF) are then decoded from the file after the bytes are freed, so
// that the file and its decoded pixels are never both in memory.
cv::Mat decode_bgr(std::vector<uint8_t>&& bytes, const std::string& name, int64_t min_side,
                   const std::string& path = "", std::unique_lock<std::mutex>* hold = nullptr) {
  if (bytes.empty()) fail(name, "the file is empty");
  const auto info = detail::probe_image(bytes.data(), bytes.size());
  if (info.format.empty() && bytes.size() >= 6 &&
      (std::memcmp(bytes.data(), "GIF87a", 6) == 0 || std::memcmp(bytes.data(), "GIF89a", 6) == 0)) {
    fail(name, "a GIF image, which this build's OpenCV cannot decode (convert it to PNG)");
  }
  if (info.format.empty()) fail(name, "not a decodable image (corrupt, truncated, or not JPEG/PNG/BMP/WebP/TIFF)");
  if (!info.incomplete.empty()) fail(name, "truncated: " + info.incomplete);
  const int64_t width = info.width, height = info.height;
  const auto size = std::to_string(width) + "x" + std::to_string(height);
  if (width <= 0 || height <= 0) fail(name, "its header gives no size (" + info.format + ")");
  if (width > kMaxPixels / height) {
    fail(name, "too large to decode safely (" + size + ", more than the 268 megapixels allowed)");
  }
  int flags = cv::IMREAD_COLOR;
  int64_t reduction = 1;
  if (info.format == "jpeg") {
    // JPEG decodes at reduced scale for almost nothing: take the largest reduction
    // that keeps the shorter side at least min_side.
    const int64_t shorter = std::min(width, height);
    if (min_side > 0) {
      if (shorter >= 8 * min_side) flags = cv::IMREAD_REDUCED_COLOR_8, reduction = 8;
      else if (shorter >= 4 * min_side) flags = cv::IMREAD_REDUCED_COLOR_4, reduction = 4;
      else if (shorter >= 2 * min_side) flags = cv::IMREAD_REDUCED_COLOR_2, reduction = 2;
    }
  } else {
    flags |= cv::IMREAD_ANYDEPTH;  // keep 16-bit samples, to scale them below
  }
  const int64_t decoded = ((width + reduction - 1) / reduction) * ((height + reduction - 1) / reduction) * 3 *
                          info.bytes_per_sample;
  if (min_side > 0 && decoded > kMaxDecodedBytes && hold) *hold = std::unique_lock<std::mutex>(large_decodes());
  cv::Mat mat;
  try {
    if (!path.empty() && (info.format == "bmp" || info.format == "tiff")) {
      std::vector<uint8_t>().swap(bytes);
      mat = cv::imread(path, flags);
    } else {
      const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<uint8_t*>(bytes.data()));
      mat = cv::imdecode(buffer, flags);
    }
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
  if (const auto special = alexnet::detail::special_file(path); !special.empty()) {
    fail(path, "is " + special + ", not an image file");
  }
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
  int64_t height = src.rows, width = src.cols;
  int64_t shorter = std::min(height, width);
  cv::Mat source = src;
  if (std::max(height, width) > 4 * shorter) {
    // Only the central square is kept: cut it before resizing (the strip whole would
    // be resized to resize x resize * aspect first). Elsewhere resize-then-cut is kept,
    // for the numbers of earlier releases.
    source = src(cv::Rect(static_cast<int>((width - shorter) / 2), static_cast<int>((height - shorter) / 2),
                          static_cast<int>(shorter), static_cast<int>(shorter)));
    height = width = shorter;
  }
  // Rounded, so that a 500x375 image at 256 becomes 341x256.
  const auto scaled = [&](int64_t side) {
    return std::max<int64_t>(resize, (side * resize + shorter / 2) / shorter);
  };
  const int64_t h = height == shorter ? resize : scaled(height);
  const int64_t w = width == shorter ? resize : scaled(width);
  cv::Mat resized = source;
  if (h != height || w != width) {
    const int interpolation = resize < shorter ? cv::INTER_AREA : cv::INTER_LINEAR;
    cv::resize(source, resized, cv::Size(static_cast<int>(w), static_cast<int>(h)), 0, 0, interpolation);
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
  return from_mat(decode_bgr(std::vector<uint8_t>(bytes), name, min_side));
}

Image decode_image(const std::string& path, int64_t min_side) {
  return from_mat(decode_bgr(read_file(path), path, min_side, path));
}

Image decode_resized(const std::string& path, int64_t side) {
  std::unique_lock<std::mutex> large;  // held, for a large image, until it is small
  return resize_crop(decode_bgr(read_file(path), path, side, path, &large), side, side, /*bgr=*/true);
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
  alexnet::detail::write_file_atomically(path, std::string(encoded.begin(), encoded.end()), "image");
}

}  // namespace alexnet::data
