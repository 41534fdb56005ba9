#include <alexnet/network/pytorch.h>

#include "network/atomic_file.h"
#include "network/file_kind.h"
#include "network/pickle.h"
#include "network/tensor_archive.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace alexnet {
namespace {

using detail::PickleValue;
using detail::PickleValuePtr;
using Kind = PickleValue::Kind;

std::string shape(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open the file");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// PyTorch 1.6+: a zip archive with `<archive>/data.pkl` and one record per storage
// (tensor_archive.h), every storage read.
PickleValuePtr read_zip(const std::string& path) {
  detail::TensorArchive archive(path);
  auto root = archive.root();
  archive.materialize(*root);
  return root;
}

// Before PyTorch 1.6: pickles one after another (magic number, protocol version,
// system info, the object, the storage keys), then each storage's element count
// (int64) and raw bytes.
PickleValuePtr read_legacy(const std::string& path) {
  const auto file = read_all(path);
  size_t at = 0;
  const detail::PersistentLoad none = [](const PickleValue&) -> PickleValuePtr {
    throw std::runtime_error("a storage outside the object");
  };
  const auto magic = detail::unpickle(file.data(), file.size(), &at, none);
  static const std::string kMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);  // 0x1950a86a20f9469cfc6c
  if (magic->kind != Kind::kBigInt || magic->text != kMagic) {
    throw std::runtime_error("a pickle, but not one torch.save wrote (no PyTorch magic number)");
  }
  const auto protocol = detail::unpickle(file.data(), file.size(), &at, none);
  if (protocol->kind != Kind::kInt || protocol->integer != 1001) {
    throw std::runtime_error("unsupported legacy protocol version (" + protocol->describe() + ")");
  }
  const auto info = detail::unpickle(file.data(), file.size(), &at, none);
  for (const auto& [key, value] : info->entries) {
    if (key->text == "little_endian" && value->kind == Kind::kBool && !value->integer) {
      throw std::runtime_error("written on a big-endian machine, which is not supported");
    }
  }
  std::map<std::string, at::Tensor> storages;
  const auto object = detail::unpickle(file.data(), file.size(), &at, [&](const PickleValue& raw) {
    const auto id = detail::parse_storage_id(raw);
    auto& storage = storages[id.key];
    if (!storage.defined()) {
      // Its bytes follow the object: more elements than the rest of the file holds is damage,
      // refused before allocating.
      if (id.numel > static_cast<int64_t>((file.size() - at) / c10::elementSize(id.dtype))) {
        throw std::runtime_error("storage '" + id.key + "' claims " + std::to_string(id.numel) +
                                 " elements, more than the file holds");
      }
      storage = at::empty({id.numel}, at::TensorOptions(id.dtype));
    }
    if (storage.numel() != id.numel) throw std::runtime_error("storage '" + id.key + "' has two sizes");
    if (!id.view) return detail::storage_value(storage, 0, id.numel);
    const auto& v = id.view->items;  // (view_key, offset, size)
    if (id.view->kind != Kind::kTuple || v.size() != 3 || v[1]->kind != Kind::kInt || v[2]->kind != Kind::kInt ||
        v[1]->integer < 0 || v[2]->integer < 0 || v[1]->integer + v[2]->integer > id.numel) {
      throw std::runtime_error("storage '" + id.key + "' has a malformed view");
    }
    return detail::storage_value(storage, v[1]->integer, v[2]->integer);
  });
  const auto keys = detail::unpickle(file.data(), file.size(), &at, none);
  if (keys->kind != Kind::kList) throw std::runtime_error("no list of storage keys after the object");
  for (const auto& key : keys->items) {
    const auto it = storages.find(key->text);
    if (key->kind != Kind::kString || it == storages.end()) {
      throw std::runtime_error("storage key " + key->describe() + " is not used by the object");
    }
    auto& storage = it->second;
    int64_t numel = 0;
    if (file.size() - at < 8) throw std::runtime_error("the file is truncated (storage '" + key->text + "')");
    std::memcpy(&numel, file.data() + at, 8);
    at += 8;
    if (numel != storage.numel()) {
      throw std::runtime_error("storage '" + key->text + "' holds " + std::to_string(numel) + " elements, expected " +
                               std::to_string(storage.numel()));
    }
    if (file.size() - at < storage.nbytes()) {
      throw std::runtime_error("the file is truncated (storage '" + key->text + "')");
    }
    std::memcpy(storage.data_ptr(), file.data() + at, storage.nbytes());
    at += storage.nbytes();
  }
  if (keys->items.size() != storages.size()) throw std::runtime_error("a storage the object uses has no data");
  return object;
}

bool is_state_dict(const PickleValue& v) {
  if (v.kind != Kind::kDict || v.entries.empty()) return false;
  return std::all_of(v.entries.begin(), v.entries.end(), [](const auto& e) {
    return e.first->kind == Kind::kString && e.second->kind == Kind::kTensor;
  });
}

StateDict unwrap(const PickleValue& top) {
  const PickleValue* dict = &top;
  if (!is_state_dict(top) && top.kind == Kind::kDict) {
    for (const char* wrapper : {"state_dict", "model_state_dict", "model"}) {
      for (const auto& [key, value] : top.entries) {
        if (key->kind == Kind::kString && key->text == wrapper && is_state_dict(*value)) dict = value.get();
      }
      if (dict != &top) break;
    }
  }
  if (dict->kind != Kind::kDict) throw std::runtime_error("holds " + dict->describe() + ", not a state dict");
  StateDict state;
  for (const auto& [key, value] : dict->entries) {
    if (key->kind != Kind::kString) throw std::runtime_error("has a key that is " + key->describe());
    if (value->kind != Kind::kTensor) {
      throw std::runtime_error("key '" + key->text + "' holds " + value->describe() +
                               ", not a tensor (and no 'state_dict' or 'model' entry holds a state dict)");
    }
    state.emplace_back(key->text, value->tensor);
  }
  if (state.empty()) throw std::runtime_error("holds an empty dict");
  const std::string prefix = "module.";
  const bool wrapped = std::all_of(state.begin(), state.end(),
                                   [&](const auto& e) { return e.first.rfind(prefix, 0) == 0; });
  if (wrapped) {
    for (auto& entry : state) entry.first.erase(0, prefix.size());
  }
  return state;
}

// Each key of the layout and the parameters it fills, in order: one parameter for
// torchvision's network, the two towers' (concatenated along dim 0) for the paper's.
std::vector<std::pair<std::string, std::vector<torch::Tensor>>> layout(const AlexNetImpl& model) {
  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> out;
  if (model.options.architecture() == Architecture::kTorchvision) {
    for (const auto& p : model.named_parameters()) out.push_back({p.key(), {p.value()}});
    return out;
  }
  if (!model.tower1) {  // one tower: its layers' names, as the grouped layout's
    for (const auto& p : model.tower0->named_parameters()) out.push_back({p.key(), {p.value()}});
    return out;
  }
  const auto t0 = model.tower0->named_parameters();
  const auto t1 = model.tower1->named_parameters();
  for (const auto& p : t0) out.push_back({p.key(), {p.value(), t1[p.key()]}});
  return out;
}

}  // namespace

StateDict read_state_dict(const std::string& path) {
  try {
    std::error_code error;
    if (std::filesystem::is_directory(path, error)) throw std::runtime_error("is a directory, not a file");
    if (const auto special = detail::special_file(path); !special.empty()) {
      throw std::runtime_error(special + ", not a file torch.save wrote");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open the file");
    char head[512] = {};
    in.read(head, sizeof head);
    const auto n = in.gcount();
    if (n == 0) throw std::runtime_error("the file is empty");
    if (n >= 4 && std::string(head, 4) == "PK\x03\x04") return unwrap(*read_zip(path));
    if (n >= 262 && std::string(head + 257, 5) == "ustar") {
      throw std::runtime_error("a tar archive (PyTorch before 0.4), which is not supported");
    }
    if (static_cast<uint8_t>(head[0]) == 0x80) return unwrap(*read_legacy(path));
    throw std::runtime_error("not a PyTorch file (neither a zip archive nor a pickle)");
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("'" + path + "': " + e.what());
  }
}

void write_state_dict(const StateDict& state, const std::string& path) {
  detail::write_file_atomically(path, detail::pickle_state_dict(state), "state dict");
}

StateDict to_state_dict(const AlexNetImpl& model) {
  StateDict state;
  for (const auto& [key, params] : layout(model)) {
    std::vector<torch::Tensor> parts;
    for (const auto& p : params) parts.push_back(p.detach().to(at::kCPU));
    state.emplace_back(key, parts.size() == 1 ? parts[0] : at::cat(parts));
  }
  return state;
}

void load_state_dict(AlexNetImpl& model, const StateDict& state, const std::string& source) {
  std::map<std::string, torch::Tensor> given(state.begin(), state.end());
  const auto expected = layout(model);
  std::set<std::string> known;
  for (const auto& [key, params] : expected) {
    known.insert(key);
    const auto it = given.find(key);
    if (it == given.end()) throw std::runtime_error("'" + source + "': missing key '" + key + "'");
    auto sizes = params[0].sizes().vec();
    for (size_t i = 1; i < params.size(); ++i) sizes[0] += params[i].size(0);
    if (it->second.sizes() != torch::IntArrayRef(sizes)) {
      throw std::runtime_error("'" + source + "': key '" + key + "' has shape " + shape(it->second.sizes()) +
                               ", the model needs " + shape(sizes));
    }
    if (!it->second.is_floating_point()) {
      throw std::runtime_error("'" + source + "': key '" + key + "' holds " +
                               std::string(c10::toString(it->second.scalar_type())) + ", not floating point");
    }
  }
  for (const auto& [key, tensor] : state) {
    if (!known.count(key)) {
      throw std::runtime_error("'" + source + "': unexpected key '" + key + "' (not in the " +
                               name_of(model.options.architecture()) + " network)");
    }
  }
  torch::NoGradGuard no_grad;
  for (const auto& [key, params] : expected) {
    const auto& source_tensor = given[key];
    int64_t offset = 0;
    for (auto p : params) {
      p.copy_(source_tensor.narrow(0, offset, p.size(0)));
      offset += p.size(0);
    }
  }
}

AlexNet from_torchvision(const StateDict& state, const std::string& source) {
  const auto fc8 = std::find_if(state.begin(), state.end(), [](const auto& e) { return e.first == "classifier.6.weight"; });
  if (fc8 == state.end()) {
    throw std::runtime_error("'" + source + "': missing key 'classifier.6.weight' (not torchvision's AlexNet: its first key is '" +
                             state.front().first + "')");
  }
  if (fc8->second.dim() != 2) throw std::runtime_error("'" + source + "': key 'classifier.6.weight' is not a matrix");
  AlexNet model(AlexNetOptions::torchvision().num_classes(fc8->second.size(0)).init(Init::kPyTorch));
  load_state_dict(*model, state, source);
  return model;
}

}  // namespace alexnet
