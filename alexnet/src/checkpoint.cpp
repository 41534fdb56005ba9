#include <alexnet/checkpoint.h>
#include <alexnet/error.h>

#include "atomic_file.h"
#include "zip.h"

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

// Bumped when the layout of the archive changes.
constexpr const char* kFormat = "alexnet-checkpoint-1";

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
};

Archive open(const std::string& path) {
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) fail(path, std::strerror(errno));
  }
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
  if (format.toStringRef() != kFormat) {
    fail(path, "unsupported format '" + format.toStringRef() + "' (this build reads '" + kFormat + "')");
  }
  c10::IValue options;
  if (!a.archive.try_read("options", options) || !options.isString()) {
    fail(path, "has no model options");
  }
  try {
    a.options = options_from_string(options.toStringRef());
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

}  // namespace

void save(const AlexNetImpl& model, const std::string& path, const CheckpointExtras& extras) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string(kFormat)));
  archive.write("options", c10::IValue(options_to_string(model.options)));
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

CheckpointExtras extras_of(Archive& a) {
  CheckpointExtras extras;
  c10::IValue value;
  if (a.archive.try_read("extra_tensors", value) && value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      extras.tensors.emplace(entry.key().toStringRef(), entry.value().toTensor());
    }
  }
  if (a.archive.try_read("extra_strings", value) && value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      extras.strings.emplace(entry.key().toStringRef(), entry.value().toStringRef());
    }
  }
  return extras;
}

CheckpointExtras read_extras(const std::string& path) {
  auto a = open(path);
  return extras_of(a);
}

AlexNet load(const std::string& path, const std::vector<c10::Device>& devices, CheckpointExtras* extras) {
  auto a = open(path);
  auto options = a.options;
  options.devices(devices);
  if (devices.size() == 2 && devices[0] != devices[1]) options.execution(Execution::kTowers);
  AlexNet model(options);
  copy_checked(*model, read_tensors(a, path), path);
  if (extras) *extras = extras_of(a);
  return model;
}

void load_weights(AlexNetImpl& model, const std::string& path, CheckpointExtras* extras) {
  auto a = open(path);
  copy_checked(model, read_tensors(a, path), path);
  if (extras) *extras = extras_of(a);
}

std::string options_to_string(const AlexNetOptions& o) {
  std::ostringstream out;
  out.precision(17);
  out << "architecture=" << to_string(o.architecture()) << "\n"
      << "num_classes=" << o.num_classes() << "\n"
      << "input_size=" << o.input_size() << "\n"
      << "conv1_padding=" << o.conv1_padding() << "\n"
      << "dropout=" << o.dropout() << "\n"
      << "init=" << to_string(o.init()) << "\n"
      << "execution=" << to_string(o.execution()) << "\n"
      << "lrn_across_towers=" << o.lrn_across_towers() << "\n"
      << "pool_before_lrn=" << o.pool_before_lrn() << "\n"
      << "ceil_mode=" << o.ceil_mode() << "\n";
  if (o.lrn()) {
    const auto& l = *o.lrn();
    out << "lrn.size=" << l.size() << "\n"
        << "lrn.alpha=" << l.alpha() << "\n"
        << "lrn.beta=" << l.beta() << "\n"
        << "lrn.k=" << l.k() << "\n"
        << "lrn.mode=" << to_string(l.mode()) << "\n";
  } else {
    out << "lrn=none\n";
  }
  return out.str();
}

AlexNetOptions options_from_string(const std::string& text) {
  std::map<std::string, std::string> values;
  std::istringstream in(text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::invalid_argument("options line " + std::to_string(number) + " is not key=value: '" +
                                  line + "'");
    }
    values[line.substr(0, eq)] = line.substr(eq + 1);
  }
  auto take = [&](const std::string& key) {
    const auto found = values.find(key);
    if (found == values.end()) throw std::invalid_argument("options lack '" + key + "'");
    auto value = found->second;
    values.erase(found);
    return value;
  };
  auto number = [&](const std::string& key) {
    const auto text = take(key);
    try {
      size_t used = 0;
      const double v = std::stod(text, &used);
      if (used == text.size()) return v;
    } catch (const std::exception&) {
    }
    throw std::invalid_argument("option '" + key + "' is not a number: '" + text + "'");
  };
  // Whole numbers in int64's range, or the option is refused (a cast of any double is
  // undefined behaviour: fuzz/corpus/checkpoint).
  auto integer = [&](const std::string& key) {
    const auto text = take(key);
    try {
      size_t used = 0;
      const long long v = std::stoll(text, &used);
      if (used == text.size()) return static_cast<int64_t>(v);
    } catch (const std::exception&) {
    }
    throw std::invalid_argument("option '" + key + "' is not a whole number: '" + text + "'");
  };
  AlexNetOptions o;
  o.architecture(architecture_from_string(take("architecture")))
      .num_classes(integer("num_classes"))
      .input_size(integer("input_size"))
      .conv1_padding(integer("conv1_padding"))
      .dropout(number("dropout"))
      .init(init_from_string(take("init")))
      .execution(execution_from_string(take("execution")));
  // Options added since: their defaults for checkpoints written before them.
  auto flag = [&](const std::string& key) {
    if (!values.count(key)) return false;
    const auto v = take(key);
    if (v != "0" && v != "1") throw std::invalid_argument("option '" + key + "' must be 0 or 1, got '" + v + "'");
    return v == "1";
  };
  o.lrn_across_towers(flag("lrn_across_towers")).pool_before_lrn(flag("pool_before_lrn")).ceil_mode(flag("ceil_mode"));
  if (values.count("lrn") && values.at("lrn") == "none") {
    values.erase("lrn");
    o.lrn(c10::nullopt);
  } else {
    const auto mode = parse<LRNMode>("LRN mode", take("lrn.mode"));
    o.lrn(LRNOptions()
              .size(integer("lrn.size"))
              .alpha(number("lrn.alpha"))
              .beta(number("lrn.beta"))
              .k(number("lrn.k"))
              .mode(mode));
  }
  if (!values.empty()) throw std::invalid_argument("unknown option '" + values.begin()->first + "'");
  return o;
}

}  // namespace alexnet
