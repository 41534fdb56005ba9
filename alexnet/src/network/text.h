#pragma once

// Internal: the one text-line reader. Files written on other systems carry a UTF-8
// byte-order mark and CRLF line ends; neither belongs to the text.

#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace alexnet::detail {

/// Every line of `text`, numbered from 1 by position: a leading UTF-8 byte-order mark
/// removed, each line's CR removed; a last line without '\n' counts, an empty end
/// does not.
inline std::vector<std::string> all_lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    auto line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(std::move(line));
    start = end + 1;
  }
  return out;
}

/// The lines of `text` as all_lines reads them, blank ones (empty after that) left out.
inline std::vector<std::string> text_lines(const std::string& text) {
  std::vector<std::string> out;
  for (auto& line : all_lines(text)) {
    if (!line.empty()) out.push_back(std::move(line));
  }
  return out;
}

/// The length its lead byte gives the UTF-8 character at `text[at]` (1 to 4; it may run
/// past the end of `text`, which callers check), or 0 when the bytes there are not one:
/// a byte no character begins with, or one of its continuation bytes is not one.
inline size_t utf8_length(const std::string& text, size_t at) {
  const auto c = static_cast<unsigned char>(text[at]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  for (size_t k = 1; k < n && at + k < text.size(); ++k) {
    if ((static_cast<unsigned char>(text[at + k]) >> 6) != 0x2) return 0;
  }
  return n;
}

/// The whole of a file, or throws "WHAT 'PATH': cannot open".
inline std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(what + " '" + path + "': cannot open");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace alexnet::detail
