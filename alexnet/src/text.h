#pragma once

// Internal: the one text-line reader. Files written on other systems carry a UTF-8
// byte-order mark and CRLF line ends; neither belongs to the text.

#include <string>
#include <vector>

namespace alexnet::detail {

/// The lines of `text`: a leading UTF-8 byte-order mark removed, each line's CR
/// removed, blank lines (empty after that) left out.
inline std::vector<std::string> text_lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  while (start <= text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    auto line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(std::move(line));
    start = end + 1;
  }
  return out;
}

}  // namespace alexnet::detail
