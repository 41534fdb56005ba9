#pragma once

// Internal: the class names a converted network carries.

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet::detail {

/// `classes` for a network of `outputs` classes: named by index ("0", "1", ...) when
/// empty; throws std::invalid_argument naming `source` when the count differs.
std::vector<std::string> class_names(std::vector<std::string> classes, int64_t outputs, const std::string& source);

}  // namespace alexnet::detail
