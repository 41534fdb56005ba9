#pragma once

// Internal: the directory of a zip archive as PyTorch writes them (torch.save, LibTorch's
// archives): every entry stored uncompressed. Read from the end of the file, every
// length checked against the file's size, so that a damaged or hostile archive cannot
// make anyone allocate more than the file holds (a deflated entry claiming gigabytes,
// a record past the end). Fuzzed through fuzz/state_dict.cpp and fuzz/checkpoint.cpp.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace alexnet::detail {

struct ZipEntry {
  std::string name;
  uint64_t offset = 0;  ///< of its data in the file
  uint64_t size = 0;    ///< bytes
  uint32_t crc32 = 0;   ///< of its data, as the directory records it
};

/// The CRC-32 of zip (and gzip, PNG): polynomial 0xEDB88320, reflected; `crc` the
/// value so far, for data in pieces.
uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

/// Reads `n` bytes at `offset` of the archive (fewer at its end).
using ZipRead = std::function<std::string(uint64_t offset, size_t n)>;

/// The entries of an archive of `size` bytes. Throws std::runtime_error with the reason
/// (no end-of-directory record, a compressed entry, an entry outside the file).
std::vector<ZipEntry> zip_directory(const ZipRead& read, uint64_t size);

/// The same for a file, with every entry's data checked against its CRC-32 (a damaged
/// byte anywhere is refused here, before LibTorch's reader, which trusts the bytes).
std::vector<ZipEntry> zip_directory(const std::string& path);

/// Throws std::runtime_error naming the first entry whose data (in `read`) does not
/// match its CRC-32.
void check_crcs(const ZipRead& read, const std::vector<ZipEntry>& entries);

}  // namespace alexnet::detail
