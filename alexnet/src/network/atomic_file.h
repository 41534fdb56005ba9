#pragma once

// Internal: the one way the library writes a file. The bytes go to a temporary file
// beside the target, which is flushed and synced, renamed into place, and its folder
// synced: a crash or a full disk never leaves a half-written file under the final
// name, and a failed write removes the temporary and keeps the previous file. The
// temporary is anonymous (O_TMPFILE) until the instant before its rename, so a process
// killed while writing leaves nothing; where the file system cannot, it is named
// PATH.tmp-PID from the start, and remove_orphan_temporaries clears those a killed
// writer left.

#include <functional>
#include <ostream>
#include <string>

namespace alexnet::detail {

/// Takes `n` bytes at `data`; always says it took them all. A failed write (a full
/// disk, a file-size limit) is kept and reported when the file is finished, so that a
/// writer which cannot fail cleanly half-way (LibTorch's zip writer aborts the process
/// when it throws from its destructor) runs to its end.
using ByteSink = std::function<size_t(const void* data, size_t n)>;

/// Calls `write` with a sink into a temporary file beside `path`, then puts the file in
/// place as above. Throws std::runtime_error "WHAT 'PATH': REASON; the previous file is
/// intact" (or "; nothing was written"), naming what the file is ("checkpoint") and
/// why ("no space left on device"), having removed the temporary file.
void write_atomically(const std::string& path, const std::function<void(const ByteSink&)>& write,
                      const std::string& what = "file");

/// The same with a std::ostream onto the sink.
void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write,
                      const std::string& what = "file");

/// The name of `path`'s temporary while process `pid` writes it: PATH.tmp-PID.
std::string temporary_of(const std::string& path, long pid);

/// Removes the temporaries (NAME.tmp-PID) in `folder` whose writing process is gone
/// (those of the file `name` only, when given); returns how many. write_atomically
/// calls it for the file it writes, a run's resume for its folder.
int remove_orphan_temporaries(const std::string& folder, const std::string& name = "");

/// alexnet::check_writable (<alexnet/network/checkpoint.h>).
void check_writable(const std::string& path, const std::string& what);

/// `bytes` to `path`, as write_atomically.
void write_file_atomically(const std::string& path, const std::string& bytes, const std::string& what = "file");

}  // namespace alexnet::detail
