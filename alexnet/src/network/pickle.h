#pragma once

// Internal: the subset of Python's pickle format that PyTorch state dicts use, read
// without executing anything. A pickle is a program for a stack machine whose
// GLOBAL instruction names any Python callable; this reader knows a handful of
// globals by name (an OrderedDict, tensor rebuilding, storage types) and refuses
// every other one, so a file can build dicts, lists, tuples, numbers, strings and
// tensors and nothing else.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::detail {

struct PickleValue;
using PickleValuePtr = std::shared_ptr<PickleValue>;

struct PickleValue {
  enum class Kind { kNone, kBool, kInt, kBigInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t integer = 0;  ///< kBool, kInt; kStorage: offset (elements) into `tensor`
  double real = 0;
  std::string text;  ///< kString; kGlobal: "module.name"; kBigInt: little-endian bytes
  std::vector<PickleValuePtr> items;                          ///< kTuple, kList
  std::vector<std::pair<PickleValuePtr, PickleValuePtr>> entries;  ///< kDict, in insertion order
  at::Tensor tensor;  ///< kTensor; kStorage: the whole storage, 1-D
  int64_t numel = 0;  ///< kStorage: elements this storage (view) holds

  std::string describe() const;  ///< "a dict", "the string 'x'", ... for messages

  PickleValue() = default;
  PickleValue(const PickleValue&) = default;
  PickleValue& operator=(const PickleValue&) = default;
  /// Frees nested values without recursion: a hostile pickle can nest them deeper
  /// than the stack can follow.
  ~PickleValue();
};

/// Resolves a persistent id (PyTorch's ('storage', type, key, location, numel, ...)
/// tuple) to a storage value.
using PersistentLoad = std::function<PickleValuePtr(const PickleValue& id)>;

/// Reads one pickle starting at `*offset` in `data`, advancing `*offset` past its STOP.
/// Throws std::runtime_error with the reason (truncation, an unknown opcode, a refused
/// global by name).
PickleValuePtr unpickle(const char* data, size_t size, size_t* offset, const PersistentLoad& persistent_load);

/// A persistent id as PyTorch writes one: ('storage', torch.<Type>Storage, key,
/// location, numel[, view]); `view` is the legacy format's (view_key, offset, size).
struct StorageId {
  std::string key;
  c10::ScalarType dtype;
  int64_t numel = 0;
  const PickleValue* view = nullptr;  ///< into the id it was parsed from; null if none
};
/// Throws std::runtime_error for anything but a storage's id.
StorageId parse_storage_id(const PickleValue& id);

/// What a PersistentLoad returns: `numel` elements of the 1-D `root` from `offset`.
PickleValuePtr storage_value(const at::Tensor& root, int64_t offset, int64_t numel);

/// The dtype of a PyTorch storage class such as "torch.FloatStorage"; throws for others.
c10::ScalarType storage_dtype(const std::string& global);

/// Writes `entries` as `torch.save` does (zip format, protocol 2, an OrderedDict of
/// tensors), into bytes.
std::string pickle_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& entries);

}  // namespace alexnet::detail
