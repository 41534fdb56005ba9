#include "atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace alexnet::detail {
namespace {

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// fsync, so that the rename below cannot reach the disk before the data does.
bool sync(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0 || errno == EINVAL;  // folders on some file systems
  ::close(fd);
  return ok;
}

}  // namespace

void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write,
                      const std::string& what) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  auto fail = [&](const std::string& reason) {
    std::remove(tmp.c_str());
    throw std::runtime_error(what + " '" + path + "': " + reason);
  };
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot write " + tmp + ": " + std::strerror(errno));
    try {
      write(out);
    } catch (const std::exception& e) {
      out.close();
      fail(e.what());
    }
    out.flush();
    if (!out) {
      const int error = errno;
      out.close();
      fail(error == ENOSPC ? "no space left on device" : "write failed (" + std::string(std::strerror(error)) + ")");
    }
    out.close();
    if (!out) fail("write failed when closing (disk full?)");
  }
  if (!sync(tmp)) fail("cannot sync " + tmp + ": " + std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(std::string("cannot rename into place: ") + std::strerror(errno));
  sync(directory_of(path));
}

void write_file_atomically(const std::string& path, const std::string& bytes, const std::string& what) {
  write_atomically(
      path, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); }, what);
}

}  // namespace alexnet::detail
