#pragma once

// Internal: writing files so that a crash never leaves a half-written one under the
// final name.

#include <string>

namespace alexnet::detail {

/// Writes `bytes` to a temporary file beside `path`, flushes it and renames it into
/// place. Throws std::runtime_error naming `path` (and removes the temporary file).
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace alexnet::detail
