#include "network/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <streambuf>
#include <sys/stat.h>
#include <sys/statvfs.h>

namespace alexnet::detail {
namespace {

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// A file descriptor written through write(2), keeping the first error (errno) and
// dropping everything after it: the writer always sees success, so that code which
// must not fail mid-way (LibTorch's zip writer throws from its destructor when a
// write comes up short, and that aborts the process) finishes, and the error is
// reported once, here.
class Sink {
 public:
  explicit Sink(int fd) : fd_(fd) {}
  size_t write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    size_t left = n;
    while (error_ == 0 && left > 0) {
      const ssize_t done = ::write(fd_, p, left);
      if (done < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
      } else {
        p += done;
        left -= static_cast<size_t>(done);
      }
    }
    return n;
  }
  int error() const { return error_; }
  void fail(int error) {
    if (error_ == 0) error_ = error;
  }

 private:
  int fd_;
  int error_ = 0;
};

// std::ostream onto a ByteSink, buffered.
class SinkBuffer : public std::streambuf {
 public:
  explicit SinkBuffer(const ByteSink& sink) : sink_(sink) { setp(buffer_, buffer_ + sizeof(buffer_)); }

 protected:
  int sync() override {
    sink_(pbase(), static_cast<size_t>(pptr() - pbase()));
    setp(buffer_, buffer_ + sizeof(buffer_));
    return 0;
  }
  int_type overflow(int_type c) override {
    sync();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n >= static_cast<std::streamsize>(sizeof(buffer_))) {  // large blocks go straight through
      sync();
      sink_(s, static_cast<size_t>(n));
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }

 private:
  const ByteSink& sink_;
  char buffer_[1 << 16];
};

std::string reason(int error) {
  if (error == ENOSPC) return "no space left on device";
  if (error == EFBIG) return "file too large (a file-size limit)";
  if (error == EDQUOT) return "disk quota exceeded";
  return std::strerror(error);
}

// An anonymous file in `folder` (O_TMPFILE): the kernel removes it with its last
// descriptor, so a writer killed at any instant leaves nothing behind. -1 where the file
// system has none, or /proc (through which it is given a name) is not mounted.
int anonymous_file(const std::string& folder) {
#ifdef O_TMPFILE
  static const bool proc = ::access("/proc/self/fd", F_OK) == 0;
  if (proc) return ::open(folder.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
#endif
  (void)folder;
  return -1;
}

}  // namespace

std::string temporary_of(const std::string& path, long pid) { return path + ".tmp-" + std::to_string(pid); }

void write_atomically(const std::string& path, const std::function<void(const ByteSink&)>& write,
                      const std::string& what) {
  const std::string tmp = temporary_of(path, static_cast<long>(::getpid()));
  struct stat previous {};
  const bool existed = ::stat(path.c_str(), &previous) == 0;
  auto fail = [&](const std::string& why) {
    std::remove(tmp.c_str());
    throw std::runtime_error(what + " '" + path + "': " + why +
                             (existed ? "; the previous file is intact" : "; nothing was written"));
  };
  // Anonymous while it is written, named PATH.tmp-PID only for the instant before the
  // rename; where anonymous files are not to be had, named from the start (a folder's
  // next opening removes those whose writer is gone: remove_orphan_temporaries).
  const auto slash = path.rfind('/');
  remove_orphan_temporaries(directory_of(path), slash == std::string::npos ? path : path.substr(slash + 1));
  int fd = anonymous_file(directory_of(path));
  const bool anonymous = fd >= 0;
  if (!anonymous) fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int error = errno;
    throw std::runtime_error(what + " '" + path + "': cannot write " + tmp + ": " + reason(error));
  }
  Sink sink(fd);
  try {
    write([&](const void* data, size_t n) { return sink.write(data, n); });
  } catch (const std::exception& e) {
    ::close(fd);
    fail(e.what());
  }
  if (sink.error() == 0 && ::fsync(fd) != 0) sink.fail(errno);  // so that the rename cannot reach the disk first
  if (sink.error() == 0 && anonymous) {
    std::remove(tmp.c_str());  // one a killed process of the same pid left
    const auto self = "/proc/self/fd/" + std::to_string(fd);
    if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) != 0) sink.fail(errno);
  }
  if (::close(fd) != 0) sink.fail(errno);
  if (sink.error() != 0) fail(reason(sink.error()));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename into place: " + reason(errno));
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void check_writable(const std::string& path, const std::string& what) {
  const auto folder = directory_of(path);
  auto refuse = [&](const std::string& why) {
    throw std::runtime_error(what + " '" + path + "': cannot be written (" + why + "): nothing was done");
  };
  struct stat st {};
  if (::stat(folder.c_str(), &st) != 0) refuse("folder '" + folder + "': " + reason(errno));
  if (!S_ISDIR(st.st_mode)) refuse("'" + folder + "' is not a folder");
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) refuse("it is a folder");
  // A file made and dropped there: what the real write will meet (read-only, no permission).
  int fd = anonymous_file(folder);
  if (fd < 0) {
    const auto probe = folder + "/.alexnet-probe-" + std::to_string(::getpid());
    fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) ::unlink(probe.c_str());
  }
  if (fd < 0) refuse(reason(errno));
  ::close(fd);
  struct statvfs space {};
  if (::statvfs(folder.c_str(), &space) == 0 && space.f_bavail == 0) refuse(reason(ENOSPC));
}

int remove_orphan_temporaries(const std::string& folder, const std::string& name_of_file) {
  int removed = 0;
  DIR* d = ::opendir(folder.c_str());
  if (!d) return 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const auto at = name.rfind(".tmp-");
    if (at == std::string::npos || at == 0 || at + 5 == name.size()) continue;
    if (!name_of_file.empty() && name.compare(0, at, name_of_file) != 0) continue;
    const auto digits = name.substr(at + 5);
    if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) continue;
    const auto pid = static_cast<pid_t>(std::stol(digits));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno == EPERM) continue;  // its writer is alive
    if (std::remove((folder + "/" + name).c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write,
                      const std::string& what) {
  write_atomically(
      path,
      [&](const ByteSink& bytes) {
        SinkBuffer buffer(bytes);
        std::ostream out(&buffer);
        write(out);
        out.flush();
      },
      what);
}

void write_file_atomically(const std::string& path, const std::string& bytes, const std::string& what) {
  write_atomically(
      path, [&](const ByteSink& out) { out(bytes.data(), bytes.size()); }, what);
}

}  // namespace alexnet::detail
