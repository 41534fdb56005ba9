#include "fixtures.h"

#include "helpers.h"

#include <alexnet/data/image.h>

#include <filesystem>
#include <random>

namespace alexnet::test {
namespace fs = std::filesystem;

// Two classes a small network can tell apart: reddish and bluish noise.
std::string make_colours(const std::string& name, int per_class) {
  const auto root = temp_dir(name);
  std::mt19937 random(3);
  for (int c = 0; c < 2; ++c) {
    fs::create_directories(root + "/" + std::to_string(c));
    for (int i = 0; i < per_class; ++i) {
      data::Image image;
      image.height = image.width = 40;
      image.channels = 3;
      image.pixels.resize(40 * 40 * 3);
      for (size_t p = 0; p < image.pixels.size(); ++p) {
        const int channel = static_cast<int>(p % 3);
        const int base = (c == 0 ? (channel == 0 ? 170 : 70) : (channel == 2 ? 170 : 70));
        image.pixels[p] = static_cast<uint8_t>(base + static_cast<int>(random() % 60) - 30);
      }
      data::write_image(image, root + "/" + std::to_string(c) + "/" + std::to_string(i) + ".png");
    }
  }
  return root;
}

}  // namespace alexnet::test
