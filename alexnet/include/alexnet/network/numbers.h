#pragma once

// The one reader of numbers written as text: checkpoints' and configurations' JSON,
// options given as text, command-line flags. A number is the whole text (no spaces, no
// trailing characters) in its type's range, read with std::from_chars: the same in
// every locale, and never a silent cast of an out-of-range value (a 1e300 that
// std::stoll would refuse but a cast through double would wrap).
//
//   alexnet::parse_number<int64_t>("epochs", "90")     // 90
//   alexnet::parse_number<int64_t>("epochs", "ten")    // throws OptionError "epochs takes a whole number, got 'ten'"
//   alexnet::to_number<double>("0.01")                 // std::optional<double>(0.01)

#include <alexnet/network/error.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace alexnet {

/// `text` read whole as a T (an integer or floating-point type), or std::nullopt when
/// it is not one: empty, a sign that T cannot take (a '-' for unsigned types, any '+'),
/// anything after the number, out of T's range. Floating-point types read decimal and
/// exponent forms, "inf" and "nan".
template <typename T>
std::optional<T> to_number(std::string_view text) {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>, "to_number reads integers and reals");
  T value{};
  const char* end = text.data() + text.size();
  const auto [at, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc() || at != end || text.empty()) return std::nullopt;
  return value;
}

/// The same, or OptionError "OPTION takes a whole number, got 'TEXT'" ("a number" for
/// floating-point types).
template <typename T>
T parse_number(const std::string& option, const std::string& text) {
  if (const auto value = to_number<T>(text)) return *value;
  throw OptionError(option, std::string("takes ") + (std::is_integral_v<T> ? "a whole number" : "a number") +
                                ", got '" + text + "'");
}

}  // namespace alexnet
