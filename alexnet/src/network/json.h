#pragma once

// Internal: JSON for the library's .cpp files, through nlohmann/json (Debian's
// nlohmann-json3-dev), never in a public header. Keys keep the order they are written
// in, so a record reads the same every time. Every record (model options,
// preprocessing, run configuration, progress, metrics) is read through `Record`, so
// that a field of the wrong kind is named the same way everywhere and a number is
// never cast out of its range.

#include <alexnet/network/names.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace alexnet::detail {

using Json = nlohmann::ordered_json;

/// One line of JSON. Bytes that are not UTF-8 (a Linux file name may hold any) become
/// U+FFFD, so the output is always valid JSON.
inline std::string dump(const Json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// `v`, or null when it is NaN or infinite (JSON has neither).
inline Json number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

/// A JSON object read field by field. Every error is std::invalid_argument
/// "WHAT: 'KEY' is not a whole number: 1e+300" (or "...: not JSON (...)",
/// "...: unknown field 'KEY'", "...: no field 'KEY'").
class Record {
 public:
  /// Parses `text`, which must hold one object.
  Record(const std::string& text, std::string what) : what_(std::move(what)) {
    try {
      json_ = Json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument(what_ + ": not JSON (" + std::string(e.what()) + ")");
    }
    if (!json_.is_object()) throw std::invalid_argument(what_ + ": not a JSON object");
  }
  /// A nested object.
  Record(Json object, std::string what) : json_(std::move(object)), what_(std::move(what)) {
    if (!json_.is_object()) throw std::invalid_argument(what_ + ": not a JSON object");
  }

  bool has(const std::string& key) const { return json_.contains(key); }
  bool is_null(const std::string& key) const { return at(key).is_null(); }
  const Json& at(const std::string& key) const {
    const auto found = json_.find(key);
    if (found == json_.end()) throw std::invalid_argument(what_ + ": no field '" + key + "'");
    return *found;
  }
  const Json& json() const { return json_; }
  const std::string& what() const { return what_; }

  int64_t whole(const std::string& key) const {
    const auto& v = at(key);
    if (v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))) {
      return v.get<int64_t>();
    }
    throw wrong(key, "a whole number");
  }
  uint64_t unsigned_whole(const std::string& key) const {
    const auto& v = at(key);
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    throw wrong(key, "a whole number of at least 0");
  }
  /// A number; null reads as NaN (`number` writes NaN and infinities as null).
  double real(const std::string& key) const {
    const auto& v = at(key);
    if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
    if (v.is_number()) return v.get<double>();
    throw wrong(key, "a number");
  }
  bool flag(const std::string& key) const {
    const auto& v = at(key);
    if (v.is_boolean()) return v.get<bool>();
    throw wrong(key, "true or false");
  }
  std::string text(const std::string& key) const {
    const auto& v = at(key);
    if (v.is_string()) return v.get<std::string>();
    throw wrong(key, "a string");
  }
  std::vector<std::string> texts(const std::string& key) const {
    const auto& v = at(key);
    std::vector<std::string> out;
    if (v.is_array()) {
      for (const auto& item : v) {
        if (!item.is_string()) throw wrong(key, "a list of strings");
        out.push_back(item.get<std::string>());
      }
      return out;
    }
    throw wrong(key, "a list of strings");
  }
  std::vector<double> reals(const std::string& key, size_t size) const {
    const auto& v = at(key);
    std::vector<double> out;
    if (v.is_array() && v.size() == size) {
      for (const auto& item : v) {
        if (!item.is_number()) throw wrong(key, std::to_string(size) + " numbers");
        out.push_back(item.get<double>());
      }
      return out;
    }
    throw wrong(key, std::to_string(size) + " numbers");
  }
  /// An enum by its name (names.h).
  template <typename E>
  E choice(const std::string& key) const {
    const auto name = text(key);
    for (const auto& [text, value] : names<E>()) {
      if (text == name) return value;
    }
    std::string all;
    for (const auto& n : name_list<E>()) all += (all.empty() ? "" : ", ") + n;
    throw std::invalid_argument(what_ + ": '" + key + "' is '" + name + "', not one of " + all);
  }
  Record object(const std::string& key) const { return Record(at(key), what_ + " '" + key + "'"); }

  /// Throws naming the first field that is not one of `known`.
  void only(const std::set<std::string>& known) const {
    for (const auto& item : json_.items()) {
      if (!known.count(item.key())) throw std::invalid_argument(what_ + ": unknown field '" + item.key() + "'");
    }
  }

 private:
  std::invalid_argument wrong(const std::string& key, const std::string& kind) const {
    return std::invalid_argument(what_ + ": '" + key + "' is not " + kind + ": " + dump(at(key)));
  }

  Json json_;
  std::string what_;
};

}  // namespace alexnet::detail
