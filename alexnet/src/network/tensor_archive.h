#pragma once

// Internal: the one reader of PyTorch's zip archives (torch.save since PyTorch 1.6, and
// LibTorch's torch::serialize archives, which our checkpoints are): the directory
// through zip.h's bounded reader, data.pkl through pickle.h's refusing unpickler, and
// each storage only when asked, streamed from the file straight into the tensor that
// keeps it, converted on the way when another dtype is wanted. The whole file is never
// held in memory, and bytes are read once: a checkpoint loads with one copy of its
// weights, or half of one in bfloat16. Every record read is checked against its CRC-32.

#include "network/pickle.h"
#include "network/zip.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace alexnet::detail {

class TensorArchive {
 public:
  /// Opens `path` and reads its directory and data.pkl (checked against its CRC-32).
  /// Throws std::runtime_error with the reason (not a zip archive, no data.pkl, a
  /// storage whose record is shorter than it claims, a refused pickle).
  explicit TensorArchive(const std::string& path);
  ~TensorArchive();
  TensorArchive(const TensorArchive&) = delete;
  TensorArchive& operator=(const TensorArchive&) = delete;

  /// data.pkl unpickled. Its tensors are views of storages on the meta device: their
  /// dtypes, sizes and strides, no data, until `read` or `materialize`.
  const PickleValuePtr& root() const { return root_; }

  /// `view`'s data (a meta tensor from root()) as a CPU tensor of `dtype` laid out in
  /// `format` (kPreserve: as stored). A view that is its whole storage (every
  /// parameter a checkpoint holds) streams from the file in pieces into the result;
  /// others read their storage first. Throws std::runtime_error naming the record
  /// that fails its CRC-32.
  at::Tensor read(const at::Tensor& view, c10::ScalarType dtype,
                  c10::MemoryFormat format = c10::MemoryFormat::Preserve);

  /// Replaces every meta tensor under `value` by a view of its storage's data, read
  /// once per storage (as torch.load gives them).
  void materialize(PickleValue& value);

 private:
  struct Storage;
  Storage& storage_of(const at::Tensor& view);
  at::Tensor whole(Storage& storage);
  void read_at(uint64_t offset, void* into, size_t n) const;

  std::string path_;
  int fd_ = -1;
  std::map<std::string, ZipEntry> records_;  // by name, without the archive's folder
  std::map<const void*, std::shared_ptr<Storage>> storages_;  // by the meta storage's address
  PickleValuePtr root_;
};

}  // namespace alexnet::detail
