#include <alexnet/network/checkpoint.h>
#include <alexnet/network/error.h>

#include "network/atomic_file.h"
#include "network/file_kind.h"
#include "network/legacy.h"
#include "network/zip.h"

#include <ATen/core/Dict.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
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

struct Archive {
  torch::serialize::InputArchive archive;
  AlexNetOptions options;
  bool format1 = false;
};

Archive open(const std::string& path) {
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) fail(path, std::strerror(errno));
  }
  // A file of another kind is named as such, with what to do.
  if (const auto kind = detail::foreign_file(path, detail::Expected::kCheckpoint); !kind.empty()) fail(path, kind);
  // Our bounded reader checks the directory and every entry's CRC-32 first: LibTorch's
  // reader trusts the sizes a damaged file claims, and its TorchScript parser crashes on
  // damaged source (fuzz/corpus/checkpoint/crash-*).
  try {
    detail::zip_directory(path);
  } catch (const std::runtime_error& e) {
    fail(path, std::string("not a readable checkpoint (") + e.what() + ")");
  }
  Archive a;
  try {
    a.archive.load_from(path);
  } catch (const c10::Error& e) {
    fail(path, "not a readable checkpoint (" + error_message(e) + ")");
  } catch (const std::exception& e) {  // LibTorch's unpickler throws others, some without a message
    const std::string what = e.what();
    fail(path, "not a readable checkpoint (" + (what.empty() ? std::string("LibTorch cannot read it") : what) + ")");
  }
  c10::IValue format;
  if (!a.archive.try_read("format", format) || !format.isString()) {
    fail(path, "not an AlexNet checkpoint (it has no 'format' entry)");
  }
  a.format1 = format.toStringRef() == detail::kFormat1;
  if (format.toStringRef() != kFormat && !a.format1) {
    fail(path, "unsupported format '" + format.toStringRef() + "' (this build reads '" + kFormat + "' and '" +
                   detail::kFormat1 + "')");
  }
  c10::IValue options;
  if (!a.archive.try_read("options", options) || !options.isString()) {
    fail(path, "has no model options");
  }
  try {
    a.options = a.format1 ? detail::format1_options(options.toStringRef())
                          : AlexNetOptions::from_json(options.toStringRef());
  } catch (const std::exception& e) {
    fail(path, error_message(e));
  }
  return a;
}

std::map<std::string, torch::Tensor> read_tensors(Archive& a, const std::string& path) {
  c10::IValue value;
  if (!a.archive.try_read("tensors", value) || !value.isGenericDict()) {
    fail(path, "has no tensors");
  }
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString() || !entry.value().isTensor()) fail(path, "has a malformed tensor entry");
    tensors.emplace(entry.key().toStringRef(), entry.value().toTensor());
  }
  return tensors;
}

void copy_checked(AlexNetImpl& model, std::map<std::string, torch::Tensor> tensors,
                  const std::string& path) {
  auto targets = model.named_parameters(/*recurse=*/true);
  for (const auto& buffer : model.named_buffers(/*recurse=*/true)) {
    targets.insert(buffer.key(), buffer.value());
  }
  // Check everything first: a failed load must leave the model as it was.
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
  torch::NoGradGuard no_grad;
  for (auto& target : targets) target.value().copy_(tensors.at(target.key()));
}

CheckpointExtras extras_of(Archive& a, const std::string& path) {
  CheckpointExtras extras;
  c10::IValue value;
  if (a.archive.try_read("extra_tensors", value) && value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString() || !entry.value().isTensor()) fail(path, "has a malformed extra tensor");
      extras.tensors.emplace(entry.key().toStringRef(), entry.value().toTensor());
    }
  }
  if (a.archive.try_read("extra_strings", value) && value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString() || !entry.value().isString()) fail(path, "has a malformed extra string");
      extras.strings.emplace(entry.key().toStringRef(), entry.value().toStringRef());
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
  auto a = open(path);
  auto options = a.options;
  options.devices(devices);
  if (devices.size() == 2 && devices[0] != devices[1]) options.execution(Execution::kTowers);
  AlexNet model(options);
  copy_checked(*model, read_tensors(a, path), path);
  if (extras) *extras = extras_of(a, path);
  return model;
}

void load_weights(AlexNetImpl& model, const std::string& path, CheckpointExtras* extras) {
  auto a = open(path);
  copy_checked(model, read_tensors(a, path), path);
  if (extras) *extras = extras_of(a, path);
}

void check_writable(const std::string& path, const std::string& what) { detail::check_writable(path, what); }

}  // namespace alexnet
