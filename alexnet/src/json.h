#pragma once

// Internal: JSON for the library's .cpp files, through nlohmann/json (Debian's
// nlohmann-json3-dev), never in a public header. Keys keep the order they are written
// in, so a record reads the same every time.

#include <nlohmann/json.hpp>

#include <cmath>
#include <string>

namespace alexnet::detail {

using Json = nlohmann::ordered_json;

/// One line of JSON. Bytes that are not UTF-8 (a Linux file name may hold any) become
/// U+FFFD, so the output is always valid JSON.
inline std::string dump(const Json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// `v`, or null when it is NaN or infinite (JSON has neither).
inline Json number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

/// A number field that may be null (NaN); throws nlohmann's exception when absent.
inline double number_at(const Json& object, const char* key) {
  const auto& v = object.at(key);
  return v.is_null() ? std::nan("") : v.get<double>();
}

}  // namespace alexnet::detail
