// List files ("path label" lines) and class-name files. The input is both, split at the
// first 0x00 byte: the list, then the class names.
#include "common.h"

#include <alexnet/data/source.h>

#include <algorithm>
#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto split = std::find(data, data + size, uint8_t(0)) - data;
  const auto list = alexnet::fuzz::write("list.txt", data, static_cast<size_t>(split));
  const size_t rest = static_cast<size_t>(split) < size ? size - static_cast<size_t>(split) - 1 : 0;
  const auto names = alexnet::fuzz::write("names.txt", data + size - rest, rest);
  for (const bool with_names : {false, true}) {
    try {
      const auto source = alexnet::data::open_image_list(
          list, alexnet::data::ReadOptions().class_names(with_names ? names : ""));
      for (size_t i = 0; i < source->size(); ++i) {
        const auto label = source->label(i);
        if (label < 0 || static_cast<size_t>(label) >= source->classes().size()) __builtin_trap();
      }
      (void)alexnet::data::match_classes(source, {"a", "b", "c"});
    } catch (const std::exception&) {
    }
  }
  return 0;
}
