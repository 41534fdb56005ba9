#pragma once

// One name table per enum, and the only way to name a value or read one: checkpoints,
// configurations, messages and the command line's choices all go through it, so a
// value has one spelling everywhere.
//
//   alexnet::names<alexnet::Precision>()                  // {{"fp32", kFp32}, {"bf16", kBf16}, ...}
//   alexnet::name_of(alexnet::Precision::kBf16)           // "bf16"
//   alexnet::parse<alexnet::Precision>("precision", "bf16")

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace alexnet {

/// The names of E's values, in a fixed order; specialised beside each enum.
template <typename E>
const std::vector<std::pair<std::string, E>>& names();

/// The name of `value` in names<E>().
template <typename E>
const std::string& name_of(E value) {
  for (const auto& [text, v] : names<E>()) {
    if (v == value) return text;
  }
  throw std::logic_error("an enum value without a name");
}

/// The value named `text`. Throws std::invalid_argument
/// "unknown WHAT 'TEXT' (expected one of: a, b, c)".
template <typename E>
E parse(const std::string& what, const std::string& text) {
  std::string choices;
  for (const auto& [name, value] : names<E>()) {
    if (name == text) return value;
    choices += (choices.empty() ? "" : ", ") + name;
  }
  throw std::invalid_argument("unknown " + what + " '" + text + "' (expected one of: " + choices + ")");
}

/// The names alone, in order (for help texts and choices).
template <typename E>
std::vector<std::string> name_list() {
  std::vector<std::string> out;
  for (const auto& entry : names<E>()) out.push_back(entry.first);
  return out;
}

}  // namespace alexnet
