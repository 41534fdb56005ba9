#include "network/tensor_archive.h"

#include <ATen/ATen.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <stdexcept>
#include <vector>

namespace alexnet::detail {

namespace {

using Kind = PickleValue::Kind;

// Bytes read, checked and converted per piece when a storage streams into its tensor:
// small enough that the CRC-32 and the conversion find them in the core's cache.
constexpr size_t kPiece = size_t{1} << 20;

// Asks the kernel for 2 MiB pages under a large tensor not yet touched: one page fault
// per 2 MiB instead of 512 when it is filled (transparent huge pages set to "madvise",
// as most distributions do). Nothing happens where the system has none.
void prefer_huge_pages(const at::Tensor& t) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const auto end = begin + t.nbytes();
  const auto first = (begin + kHuge - 1) & ~(kHuge - 1);
  const auto last = end & ~(kHuge - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}

// As zip.h's check_crcs says it.
[[noreturn]] void damaged(const ZipEntry& record) {
  throw std::runtime_error("a damaged or truncated zip archive (entry '" + record.name +
                           "' fails its CRC-32 check)");
}

}  // namespace

struct TensorArchive::Storage {
  std::string key;
  ZipEntry record;
  c10::ScalarType dtype;
  int64_t numel = 0;
  at::Tensor meta;  // the 1-D storage on the meta device that views point into
  at::Tensor data;  // read once by `whole`
};

TensorArchive::TensorArchive(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error(std::strerror(errno));
  try {
    struct stat info {};
    if (::fstat(fd_, &info) != 0) throw std::runtime_error(std::strerror(errno));
    if (S_ISDIR(info.st_mode)) throw std::runtime_error("is a directory, not a file");
    const auto size = static_cast<uint64_t>(info.st_size);
    const ZipRead read = [&](uint64_t offset, size_t n) {
      if (offset >= size) return std::string();
      std::string bytes(static_cast<size_t>(std::min<uint64_t>(n, size - offset)), '\0');
      read_at(offset, bytes.data(), bytes.size());
      return bytes;
    };
    std::string archive;
    for (auto& entry : zip_directory(read, size)) {
      const auto slash = entry.name.find('/');
      if (slash == std::string::npos) continue;
      if (archive.empty()) archive = entry.name.substr(0, slash);
      if (entry.name.compare(0, slash, archive) != 0) throw std::runtime_error("a zip archive with two top folders");
      records_.emplace(entry.name.substr(slash + 1), std::move(entry));
    }
    // Every record but the storages' is checked now; each storage when it is read. The
    // small ones (data.pkl, byteorder, ...) are read once: checked, then used.
    constexpr uint64_t kHeld = uint64_t{1} << 24;
    std::map<std::string, std::string> held;
    std::vector<ZipEntry> large;
    for (const auto& [name, entry] : records_) {
      if (name.rfind("data/", 0) == 0) continue;
      if (entry.size > kHeld) {
        large.push_back(entry);
        continue;
      }
      auto bytes = read(entry.offset, static_cast<size_t>(entry.size));
      if (bytes.size() != entry.size || crc32(bytes.data(), bytes.size()) != entry.crc32) {
        throw std::runtime_error("a damaged or truncated zip archive (entry '" + entry.name +
                                 "' fails its CRC-32 check)");
      }
      held.emplace(name, std::move(bytes));
    }
    check_crcs(read, large);
    auto record = [&](const std::string& name) {
      if (const auto it = held.find(name); it != held.end()) return it->second;
      const auto it = records_.find(name);
      if (it == records_.end()) throw std::runtime_error("the archive has no record '" + name + "'");
      return read(it->second.offset, static_cast<size_t>(it->second.size));
    };
    if (!records_.count("data.pkl")) throw std::runtime_error("a zip archive without data.pkl (not PyTorch's)");
    if (records_.count("byteorder") && record("byteorder") != "little") {
      throw std::runtime_error("written on a big-endian machine, which is not supported");
    }
    const auto pickle = record("data.pkl");
    size_t offset = 0;
    std::map<std::string, std::shared_ptr<Storage>> by_key;
    root_ = unpickle(pickle.data(), pickle.size(), &offset, [&](const PickleValue& raw) {
      const auto id = parse_storage_id(raw);
      auto& storage = by_key[id.key];
      if (!storage) {
        const auto it = records_.find("data/" + id.key);
        if (it == records_.end()) throw std::runtime_error("the archive has no record 'data/" + id.key + "'");
        const auto element = static_cast<int64_t>(c10::elementSize(id.dtype));
        const auto bytes = it->second.size;
        // The element count is the file's word, the record's size is not: checked before
        // anything is allocated for it.
        if (id.numel > static_cast<int64_t>(bytes) / element || bytes != static_cast<uint64_t>(id.numel * element)) {
          throw std::runtime_error("storage '" + id.key + "' holds " + std::to_string(bytes) + " bytes, expected " +
                                   std::to_string(id.numel) + " elements of " + std::to_string(element));
        }
        storage = std::make_shared<Storage>();
        storage->key = id.key;
        storage->record = it->second;
        storage->dtype = id.dtype;
        storage->numel = id.numel;
        storage->meta = at::empty({id.numel}, at::TensorOptions(id.dtype).device(c10::kMeta));
        storages_[storage->meta.storage().unsafeGetStorageImpl()] = storage;
      }
      if (storage->dtype != id.dtype || storage->numel != id.numel) {
        throw std::runtime_error("storage '" + id.key + "' is named with two types or sizes");
      }
      return storage_value(storage->meta, 0, id.numel);
    });
    // torch.save's data.pkl is one pickle: bytes after its STOP are not PyTorch's.
    if (offset != pickle.size()) {
      throw std::runtime_error("data.pkl goes on for " + std::to_string(pickle.size() - offset) +
                               " bytes after its pickle ends (not one torch.save wrote)");
    }
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

TensorArchive::~TensorArchive() { ::close(fd_); }

void TensorArchive::read_at(uint64_t offset, void* into, size_t n) const {
  auto* out = static_cast<char*>(into);
  while (n > 0) {
    const auto got = ::pread(fd_, out, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw std::runtime_error(std::strerror(errno));
    if (got == 0) throw std::runtime_error("the file is truncated (it ends within a record)");
    out += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<size_t>(got);
  }
}

TensorArchive::Storage& TensorArchive::storage_of(const at::Tensor& view) {
  const auto it = view.defined() && view.is_meta() ? storages_.find(view.storage().unsafeGetStorageImpl())
                                                   : storages_.end();
  if (it == storages_.end()) throw std::logic_error("TensorArchive: not a tensor of this archive");
  return *it->second;
}

at::Tensor TensorArchive::whole(Storage& s) {
  if (!s.data.defined()) {
    auto data = at::empty({s.numel}, at::TensorOptions(s.dtype));
    read_at(s.record.offset, data.data_ptr(), static_cast<size_t>(s.record.size));
    if (crc32(data.data_ptr(), static_cast<size_t>(s.record.size)) != s.record.crc32) {
      damaged(s.record);
    }
    s.data = data;
  }
  return s.data;
}

at::Tensor TensorArchive::read(const at::Tensor& view, c10::ScalarType dtype, c10::MemoryFormat format) {
  auto& s = storage_of(view);
  // A copy holds view.numel() elements: more than its storage (strides of 0) would let a
  // damaged file claim any amount of memory.
  if (view.numel() > s.numel) {
    throw std::runtime_error("a tensor of " + std::to_string(view.numel()) + " elements in storage '" + s.key +
                             "' of " + std::to_string(s.numel));
  }
  const bool streams = !s.data.defined() && view.storage_offset() == 0 && view.numel() == s.numel &&
                       view.is_non_overlapping_and_dense();
  if (!streams) {
    const auto data = whole(s).as_strided(view.sizes(), view.strides(), view.storage_offset());
    auto out = at::empty_like(data, at::TensorOptions(dtype), format);
    return out.copy_(data);
  }
  // The view's elements in memory order are the record's bytes: read them in pieces
  // into a tensor with the view's strides, straight into it when the dtype is the same.
  auto out = at::empty_strided(view.sizes(), view.strides(), at::TensorOptions(dtype));
  prefer_huge_pages(out);
  const auto flat = at::from_blob(out.data_ptr(), {s.numel}, out.options());
  const size_t element = c10::elementSize(s.dtype);
  const int64_t piece = static_cast<int64_t>(std::max<size_t>(1, kPiece / element));
  const bool direct = dtype == s.dtype;
  at::Tensor buffer;
  if (!direct) buffer = at::empty({std::min(piece, s.numel)}, at::TensorOptions(s.dtype));
  uint32_t crc = 0;
  for (int64_t first = 0; first < s.numel; first += piece) {
    const int64_t n = std::min(piece, s.numel - first);
    const size_t bytes = static_cast<size_t>(n) * element;
    void* into = direct ? static_cast<char*>(out.data_ptr()) + static_cast<size_t>(first) * element : buffer.data_ptr();
    read_at(s.record.offset + static_cast<uint64_t>(first) * element, into, bytes);
    crc = crc32(into, bytes, crc);
    if (!direct) flat.narrow(0, first, n).copy_(buffer.narrow(0, 0, n));
  }
  if (crc != s.record.crc32) damaged(s.record);
  if (format != c10::MemoryFormat::Preserve && !out.is_contiguous(format)) out = out.contiguous(format);
  return out;
}

void TensorArchive::materialize(PickleValue& value) {
  std::set<const PickleValue*> seen;  // a hostile pickle may share or nest values
  std::vector<PickleValue*> work{&value};
  while (!work.empty()) {
    auto* v = work.back();
    work.pop_back();
    if (!seen.insert(v).second) continue;
    if (v->kind == Kind::kTensor && v->tensor.defined() && v->tensor.is_meta()) {
      const auto& t = v->tensor;
      v->tensor = whole(storage_of(t)).as_strided(t.sizes(), t.strides(), t.storage_offset());
    }
    for (auto& item : v->items) work.push_back(item.get());
    for (auto& [key, entry] : v->entries) {
      work.push_back(key.get());
      work.push_back(entry.get());
    }
  }
}

}  // namespace alexnet::detail
