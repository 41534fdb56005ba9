#include "helpers.h"

#include <alexnet/data/image.h>

#include <catch2/catch.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>

using alexnet::data::decode_image;
using alexnet::data::Image;
namespace fs = std::filesystem;

using alexnet::test::message_of;

namespace {

// An image whose pixels say where they are: R = x, G = y, B = 200 (BGR in OpenCV).
cv::Mat coordinates(int width, int height) {
  cv::Mat m(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(200, uint8_t(y), uint8_t(x));
  }
  return m;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                               static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> encode(const std::string& ext, const cv::Mat& m, std::vector<int> params = {}) {
  std::vector<uint8_t> out;
  REQUIRE(cv::imencode(ext, m, out, params));
  return out;
}

}  // namespace

TEST_CASE("Lossless formats decode to the exact pixels, in RGB order", "[image]") {
  const auto dir = alexnet::test::temp_dir("formats");
  const auto m = coordinates(40, 30);
  for (const auto& [ext, params] : std::vector<std::pair<std::string, std::vector<int>>>{
           {".png", {}}, {".bmp", {}}, {".tiff", {}}, {".webp", {cv::IMWRITE_WEBP_QUALITY, 101}}}) {
    INFO(ext);
    const auto path = dir + "/image" + ext;
    write_bytes(path, encode(ext, m, params));
    const auto image = decode_image(path);
    REQUIRE(image.height == 30);
    REQUIRE(image.width == 40);
    REQUIRE(image.channels == 3);
    CHECK(image.at(7, 13)[0] == 13);   // R = x
    CHECK(image.at(7, 13)[1] == 7);    // G = y
    CHECK(image.at(7, 13)[2] == 200);  // B
  }
  // JPEG is lossy: close, and still RGB.
  write_bytes(dir + "/image.jpg", encode(".jpg", m, {cv::IMWRITE_JPEG_QUALITY, 100}));
  const auto jpeg = decode_image(dir + "/image.jpg");
  CHECK(std::abs(int(jpeg.at(20, 30)[0]) - 30) <= 4);
  CHECK(std::abs(int(jpeg.at(20, 30)[2]) - 200) <= 4);
  fs::remove_all(dir);
}

TEST_CASE("Gray, alpha, 16-bit and palette images become 8-bit RGB", "[image]") {
  const auto dir = alexnet::test::temp_dir("kinds");
  cv::Mat gray(10, 12, CV_8UC1, cv::Scalar(77));
  write_bytes(dir + "/gray.png", encode(".png", gray));
  auto image = decode_image(dir + "/gray.png");
  CHECK(image.channels == 3);
  CHECK((image.at(3, 3)[0] == 77 && image.at(3, 3)[1] == 77 && image.at(3, 3)[2] == 77));

  cv::Mat bgra(10, 12, CV_8UC4, cv::Scalar(10, 20, 30, 0));  // fully transparent
  write_bytes(dir + "/alpha.png", encode(".png", bgra));
  image = decode_image(dir + "/alpha.png");
  CHECK(image.channels == 3);
  CHECK((image.at(0, 0)[0] == 30 && image.at(0, 0)[2] == 10));

  cv::Mat deep(10, 12, CV_16UC3, cv::Scalar(0, 257 * 100, 65535));
  write_bytes(dir + "/deep.png", encode(".png", deep));
  image = decode_image(dir + "/deep.png");
  CHECK((image.at(5, 5)[0] == 255 && image.at(5, 5)[1] == 100 && image.at(5, 5)[2] == 0));

  // A palette PNG: Debian's python3-skimage ships one.
  const std::string palette = "/usr/lib/python3/dist-packages/skimage/data/green_palette.png";
  if (fs::exists(palette)) {
    image = decode_image(palette);
    CHECK(image.channels == 3);
    CHECK(image.height > 0);
  } else {
    WARN("palette PNG check skipped: " << palette << " is missing (install python3-skimage)");
  }
  fs::remove_all(dir);
}

TEST_CASE("EXIF orientation is applied", "[image]") {
  // A 20x10 JPEG tagged orientation 6 (rotate 90 degrees clockwise to display).
  const auto jpeg = encode(".jpg", coordinates(20, 10), {cv::IMWRITE_JPEG_QUALITY, 100});
  const std::vector<uint8_t> exif{0xFF, 0xE1, 0x00, 0x22, 'E', 'x', 'i', 'f', 0, 0,
                                  'M', 'M', 0x00, 0x2A, 0x00, 0x00, 0x00, 0x08,  // TIFF header
                                  0x00, 0x01,                                    // one entry
                                  0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01,  // orientation, SHORT, 1
                                  0x00, 0x06, 0x00, 0x00,                          // = 6
                                  0x00, 0x00, 0x00, 0x00};                         // no next IFD
  std::vector<uint8_t> tagged(jpeg.begin(), jpeg.begin() + 2);
  tagged.insert(tagged.end(), exif.begin(), exif.end());
  tagged.insert(tagged.end(), jpeg.begin() + 2, jpeg.end());
  const auto image = alexnet::data::decode_image_bytes(tagged, "exif.jpg");
  CHECK(image.height == 20);
  CHECK(image.width == 10);
  // Rotated clockwise: the top-left pixel was the bottom-left one (x = 0, y = 9).
  CHECK(std::abs(int(image.at(0, 0)[1]) - 9) <= 3);
  CHECK(int(image.at(0, 0)[0]) <= 3);
}

TEST_CASE("Large JPEGs decode at reduced scale, never below the size asked for", "[image]") {
  const auto bytes = encode(".jpg", coordinates(1200, 800), {cv::IMWRITE_JPEG_QUALITY, 90});
  CHECK(alexnet::data::decode_image_bytes(bytes, "big.jpg").height == 800);
  auto image = alexnet::data::decode_image_bytes(bytes, "big.jpg", 256);
  CHECK(image.height == 400);  // 1/2: 1/4 would give 200 < 256
  CHECK(image.width == 600);
  image = alexnet::data::decode_image_bytes(bytes, "big.jpg", 100);
  CHECK(image.height == 100);  // 1/8
}

TEST_CASE("Unreadable images fail with a message naming the file", "[image]") {
  const auto dir = alexnet::test::temp_dir("bad");
  CHECK(message_of([&] { decode_image(dir + "/absent.jpg"); }) ==
        "image '" + dir + "/absent.jpg': No such file or directory");
  write_bytes(dir + "/empty.jpg", {});
  CHECK(message_of([&] { decode_image(dir + "/empty.jpg"); }) == "image '" + dir + "/empty.jpg': the file is empty");
  std::ofstream(dir + "/notes.png") << "these are not pixels\n";
  CHECK_THAT(message_of([&] { decode_image(dir + "/notes.png"); }),
             Catch::StartsWith("image '" + dir + "/notes.png': not a decodable image"));
  auto jpeg = encode(".jpg", coordinates(64, 64));
  jpeg.resize(jpeg.size() / 2);
  write_bytes(dir + "/half.jpg", jpeg);
  CHECK(message_of([&] { decode_image(dir + "/half.jpg"); }) ==
        "image '" + dir + "/half.jpg': truncated: the JPEG data ends inside a segment");
  auto png = encode(".png", coordinates(64, 64));
  png.resize(png.size() / 2);
  write_bytes(dir + "/half.png", png);
  CHECK_THAT(message_of([&] { decode_image(dir + "/half.png"); }), Catch::StartsWith("image '" + dir + "/half.png': "));
  // A PNG header that claims 100000 x 100000 pixels.
  auto bomb = encode(".png", coordinates(4, 4));
  for (int offset : {16, 20}) {
    bomb[offset] = 0x00, bomb[offset + 1] = 0x01, bomb[offset + 2] = 0x86, bomb[offset + 3] = 0xA0;
  }
  write_bytes(dir + "/bomb.png", bomb);
  CHECK(message_of([&] { decode_image(dir + "/bomb.png"); }) ==
        "image '" + dir +
            "/bomb.png': too large to decode safely (100000x100000, more than the 268 megapixels allowed)");
  CHECK(message_of([&] { decode_image(dir); }) == "image '" + dir + "': is a folder, not an image file");
  fs::remove_all(dir);
}

TEST_CASE("Resizing takes the shorter side to the size and crops the centre", "[image]") {
  const auto bytes = encode(".png", coordinates(200, 100));
  const auto image = alexnet::data::decode_image_bytes(bytes, "wide.png");
  const auto out = alexnet::data::resize_and_crop(image, 50, 40);
  CHECK(out.height == 40);
  CHECK(out.width == 40);
  // 200x100 -> 100x50; the 40x40 centre starts at x = 30, y = 5, i.e. source x = 60..139.
  CHECK(std::abs(int(out.at(0, 0)[0]) - 61) <= 2);
  CHECK(std::abs(int(out.at(0, 0)[1]) - 11) <= 2);
  CHECK(std::abs(int(out.at(39, 39)[0]) - 139) <= 2);
  const auto same = alexnet::data::resize_and_crop(image, 100, 100);
  CHECK(same.at(10, 0)[0] == 50);  // no resampling at scale 1: exact
  // The fused path gives what decoding then resizing gives.
  const auto dir = alexnet::test::temp_dir("fused");
  write_bytes(dir + "/wide.png", bytes);
  const auto fused = alexnet::data::decode_resized(dir + "/wide.png", 50);
  CHECK(fused.pixels == alexnet::data::resize_and_crop(image, 50, 50).pixels);
  fs::remove_all(dir);
}
