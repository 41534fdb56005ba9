#pragma once

// Internal: the one way the library writes a file. The bytes go to a temporary file
// beside the target, which is flushed and synced, renamed into place, and its folder
// synced: a crash or a full disk never leaves a half-written file under the final
// name, and a failed write removes the temporary and keeps the previous file.

#include <functional>
#include <ostream>
#include <string>

namespace alexnet::detail {

/// Calls `write` with a stream on a temporary file beside `path`, then puts the file in
/// place as above. Throws std::runtime_error "WHAT 'PATH': REASON" (naming what the
/// file is, e.g. "checkpoint"), having removed the temporary file.
void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write,
                      const std::string& what = "file");

/// `bytes` to `path`, as write_atomically.
void write_file_atomically(const std::string& path, const std::string& bytes, const std::string& what = "file");

}  // namespace alexnet::detail
