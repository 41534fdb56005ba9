#include <alexnet/network/checkpoint.h>
#include <alexnet/network/error.h>

#include "network/atomic_file.h"
#include "network/file_kind.h"
#include "network/legacy.h"
#include "network/tensor_archive.h"
#include "network/loading.h"

#include <ATen/core/Dict.h>
#include <torch/serialize/output-archive.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace alexnet {
namespace {

// Bumped when the layout of the archive changes; the first format is read by legacy.cpp.
constexpr const char* kFormat = "alexnet-checkpoint-2";

std::string shape_string(c10::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw std::runtime_error("checkpoint '" + path + "': " + message);
}

// A checkpoint opened: its directory and data.pkl read, its options parsed, no
// tensor read yet (tensor_archive.h).
struct Archive {
  std::unique_ptr<detail::TensorArchive> file;
  std::map<std::string, detail::PickleValuePtr> entries;  // "format", "options", "tensors", extras
  AlexNetOptions options;
  bool format1 = false;

  const detail::PickleValue* entry(const std::string& name, detail::PickleValue::Kind kind) const {
    const auto it = entries.find(name);
    return it != entries.end() && it->second->kind == kind ? it->second.get() : nullptr;
  }
};

using Kind = detail::PickleValue::Kind;

Archive open(const std::string& path) {
  // A file of another kind is named as such, with what to do (a FIFO before anything
  // opens it: that would wait for a writer).
  if (const auto kind = detail::foreign_file(path, detail::Expected::kCheckpoint); !kind.empty()) fail(path, kind);
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) fail(path, std::strerror(errno));
  }
  // Our own bounded reader (zip.h, pickle.h): LibTorch's trusts the sizes a damaged
  // file claims, and its TorchScript parser crashes on damaged source
  // (fuzz/corpus/checkpoint/crash-*).
  Archive a;
  try {
    a.file = std::make_unique<detail::TensorArchive>(path);
  } catch (const std::runtime_error& e) {
    fail(path, std::string("not a readable checkpoint (") + e.what() + ")");
  }
  const auto& root = *a.file->root();
  if (root.kind == Kind::kDict) {
    for (const auto& [key, value] : root.entries) {
      if (key->kind == Kind::kString) a.entries.emplace(key->text, value);
    }
  }
  const auto* format = a.entry("format", Kind::kString);
  if (!format) fail(path, "not an AlexNet checkpoint (it has no 'format' entry)");
  a.format1 = format->text == detail::kFormat1;
  if (format->text != kFormat && !a.format1) {
    fail(path, "unsupported format '" + format->text + "' (this build reads '" + kFormat + "' and '" +
                   detail::kFormat1 + "')");
  }
  const auto* options = a.entry("options", Kind::kString);
  if (!options) fail(path, "has no model options");
  try {
    a.options = a.format1 ? detail::format1_options(options->text) : AlexNetOptions::from_json(options->text);
    validate(a.options);  // sizes a damaged file claims are refused here, naming it
  } catch (const std::exception& e) {
    fail(path, error_message(e));
  }
  return a;
}

// The tensors of a dict entry by name, as meta views (not read yet).
std::map<std::string, torch::Tensor> tensors_of(const Archive& a, const std::string& name, const std::string& path,
                                                const std::string& what) {
  std::map<std::string, torch::Tensor> tensors;
  const auto* dict = a.entry(name, Kind::kDict);
  if (!dict) return tensors;
  for (const auto& [key, value] : dict->entries) {
    if (key->kind != Kind::kString || value->kind != Kind::kTensor) fail(path, "has a malformed " + what);
    tensors.emplace(key->text, value->tensor);
  }
  return tensors;
}

std::map<std::string, torch::Tensor> read_tensors(const Archive& a, const std::string& path) {
  if (!a.entry("tensors", Kind::kDict)) fail(path, "has no tensors");
  return tensors_of(a, "tensors", path, "tensor entry");
}

// Every parameter and buffer of `model`, by name.
torch::OrderedDict<std::string, torch::Tensor> targets_of(AlexNetImpl& model) {
  auto targets = model.named_parameters(/*recurse=*/true);
  for (const auto& buffer : model.named_buffers(/*recurse=*/true)) targets.insert(buffer.key(), buffer.value());
  return targets;
}

// Every name and shape checked before anything is read: a failed load leaves the
// model as it was.
void check_names(const torch::OrderedDict<std::string, torch::Tensor>& targets,
                 const std::map<std::string, torch::Tensor>& tensors, const std::string& path) {
  for (const auto& target : targets) {
    const auto found = tensors.find(target.key());
    if (found == tensors.end()) fail(path, "missing parameter '" + target.key() + "'");
    if (found->second.sizes() != target.value().sizes()) {
      fail(path, "parameter '" + target.key() + "' has shape " + shape_string(found->second.sizes()) +
                     " in the file but " + shape_string(target.value().sizes()) + " in the model");
    }
    if (!found->second.is_floating_point()) {
      fail(path, "parameter '" + target.key() + "' is not floating point");
    }
  }
  for (const auto& entry : tensors) {
    if (!targets.contains(entry.first)) fail(path, "unexpected parameter '" + entry.first + "'");
  }
}

// `view` read from the file as `dtype` in `format`, on `device`.
torch::Tensor read(Archive& a, const torch::Tensor& view, c10::ScalarType dtype, c10::MemoryFormat format,
                   const c10::Device& device, const std::string& path) {
  try {
    auto t = a.file->read(view, dtype, format);
    return device.is_cpu() ? t : t.to(device);
  } catch (const std::runtime_error& e) {
    fail(path, std::string("not a readable checkpoint (") + e.what() + ")");
  }
}

CheckpointExtras extras_of(Archive& a, const std::string& path) {
  CheckpointExtras extras;
  if (a.entry("extra_tensors", Kind::kDict)) {
    for (const auto& [name, view] : tensors_of(a, "extra_tensors", path, "extra tensor")) {
      extras.tensors.emplace(name, read(a, view, view.scalar_type(), c10::MemoryFormat::Preserve,
                                        c10::Device(c10::kCPU), path));
    }
  }
  if (const auto* strings = a.entry("extra_strings", Kind::kDict)) {
    for (const auto& [key, value] : strings->entries) {
      if (key->kind != Kind::kString || value->kind != Kind::kString) fail(path, "has a malformed extra string");
      extras.strings.emplace(key->text, value->text);
    }
  }
  if (a.format1) {
    try {
      detail::upgrade_format1(extras);
    } catch (const std::invalid_argument& e) {
      fail(path, std::string("malformed ") + e.what());
    }
  }
  return extras;
}

}  // namespace

void save(const AlexNetImpl& model, const std::string& path, const CheckpointExtras& extras) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string(kFormat)));
  archive.write("options", c10::IValue(model.options.to_json()));
  c10::Dict<std::string, torch::Tensor> tensors;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    tensors.insert(p.key(), p.value().detach().cpu());
  }
  for (const auto& b : model.named_buffers(/*recurse=*/true)) {
    tensors.insert(b.key(), b.value().detach().cpu());
  }
  archive.write("tensors", c10::IValue(tensors));
  c10::Dict<std::string, torch::Tensor> extra_tensors;
  for (const auto& [name, tensor] : extras.tensors) extra_tensors.insert(name, tensor.detach().cpu());
  c10::Dict<std::string, std::string> extra_strings;
  for (const auto& [name, text] : extras.strings) extra_strings.insert(name, text);
  archive.write("extra_tensors", c10::IValue(extra_tensors));
  archive.write("extra_strings", c10::IValue(extra_strings));
  detail::write_atomically(
      path, [&](const detail::ByteSink& out) { archive.save_to([&](const void* data, size_t n) { return out(data, n); }); },
      "checkpoint");
}

AlexNetOptions read_options(const std::string& path) { return open(path).options; }

CheckpointExtras read_extras(const std::string& path) {
  auto a = open(path);
  return extras_of(a, path);
}

AlexNet load(const std::string& path, const std::vector<c10::Device>& devices, CheckpointExtras* extras) {
  return detail::load(path, devices, c10::kFloat, /*channels_last=*/false, extras);
}

AlexNet detail::load(const std::string& path, const std::vector<c10::Device>& devices, c10::ScalarType dtype,
                     bool channels_last, CheckpointExtras* extras) {
  auto a = open(path);
  auto options = a.options;
  options.devices(devices);
  if (devices.size() == 2 && devices[0] != devices[1]) options.execution(Execution::kTowers);
  // Built without initialisation: every weight is read from the file into the tensor
  // that keeps it, once, converted to `dtype` on the way.
  auto model = [&] {
    const detail::Uninitialized uninitialized;
    return AlexNet(options);
  }();
  const auto tensors = read_tensors(a, path);
  auto targets = targets_of(*model);
  check_names(targets, tensors, path);
  torch::NoGradGuard no_grad;
  for (auto& target : targets) {
    auto& t = target.value();
    const auto format = channels_last && t.dim() == 4 ? c10::MemoryFormat::ChannelsLast : c10::MemoryFormat::Contiguous;
    t.set_data(read(a, tensors.at(target.key()), t.is_floating_point() ? dtype : t.scalar_type(), format, t.device(),
                    path));
  }
  if (extras) *extras = extras_of(a, path);
  return model;
}

void load_weights(AlexNetImpl& model, const std::string& path, CheckpointExtras* extras) {
  auto a = open(path);
  const auto tensors = read_tensors(a, path);
  auto targets = targets_of(model);
  check_names(targets, tensors, path);
  // Everything read (and checked) before the model changes.
  std::vector<torch::Tensor> values;
  for (const auto& target : targets) {
    const auto& t = target.value();
    values.push_back(read(a, tensors.at(target.key()), t.scalar_type(), c10::MemoryFormat::Preserve,
                          c10::Device(c10::kCPU), path));
  }
  auto more = extras ? extras_of(a, path) : CheckpointExtras{};
  torch::NoGradGuard no_grad;
  size_t i = 0;
  for (auto& target : targets) target.value().copy_(values[i++]);
  if (extras) *extras = std::move(more);
}

void check_writable(const std::string& path, const std::string& what) { detail::check_writable(path, what); }

}  // namespace alexnet
