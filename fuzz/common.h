#pragma once

// Fuzz targets run the library's own readers on the bytes libFuzzer makes: through a
// file, as users' files reach them (the readers take paths). Files live in /dev/shm
// (memory) under a name of this process's own.

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace alexnet::fuzz {

/// A folder of this process's own, made once.
inline const std::string& scratch() {
  static const std::string dir = [] {
    const auto root = std::filesystem::exists("/dev/shm") ? std::string("/dev/shm") : std::string("/tmp");
    const auto path = root + "/alexnet-fuzz-" + std::to_string(::getpid());
    std::filesystem::create_directories(path);
    return path;
  }();
  return dir;
}

/// `size` bytes at `data` into scratch()/`name`; its path.
inline std::string write(const std::string& name, const uint8_t* data, size_t size) {
  const auto path = scratch() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f) {
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  return path;
}

}  // namespace alexnet::fuzz
