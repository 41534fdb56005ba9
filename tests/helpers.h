#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace alexnet::test {

/// ||a - b|| / ||b||: the normalised error every comparison in the tests uses.
inline double relative_error(const at::Tensor& a, const at::Tensor& b) {
  const auto diff = (a.to(at::kDouble) - b.to(at::kDouble).to(a.device())).norm().item<double>();
  const auto ref = b.to(at::kDouble).norm().item<double>();
  return ref == 0.0 ? diff : diff / ref;
}

/// Detached copies of a module's parameters, in order.
inline std::vector<at::Tensor> snapshot(const torch::nn::Module& module) {
  std::vector<at::Tensor> out;
  for (const auto& p : module.parameters()) out.push_back(p.detach().clone());
  return out;
}

/// Whether two lists of tensors are equal element by element, bit for bit.
inline bool same(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!at::equal(a[i], b[i])) return false;
  }
  return true;
}

/// Marks the running test as skipped for a missing prerequisite (Python's torch, a data
/// set, a library this build lacks), saying why. Under CTest (which sets
/// ALEXNET_SKIP_CODE) the process exits with that code so CTest reports "Skipped"; run
/// directly, the reason is printed as a warning and the test returns. Where
/// ALEXNET_STRICT_SKIPS is set (scripts/test.sh, so CI) such a skip fails the test
/// instead: a prerequisite that vanished must not leave CI green.
void skip(const std::string& why);

/// The same for the lack of a GPU (or of two): the one skip CI expects, allowed
/// everywhere.
void skip_without_gpu(const std::string& why);

/// A memory figure of this process from /proc/self/status ("VmRSS", "VmHWM"), in bytes;
/// -1 where there is none.
int64_t memory_status(const std::string& field);

/// What `f` throws (its what()), or "no error".
std::string message_of(const std::function<void()>& f);

/// A fresh empty directory under the system's temporary folder, removed when the test
/// process ends unless ALEXNET_KEEP_TEMP is set.
std::string temp_dir(const std::string& name);

/// Runs a shell command; returns its exit status and fills `output` with stdout
/// (and stderr when `merge_stderr`).
int run(const std::string& command, std::string& output, bool merge_stderr = false);

/// Runs `script` with bash -c (quoted for it), so it can use $!, wait and loops.
int bash(const std::string& script, std::string& output);

/// The whole of a text file ("" when it cannot be read).
std::string read_text(const std::string& path);

/// True when Python (/usr/bin/python3) imports `modules` ("torch, cv2"); otherwise skips
/// the running test, saying what is missing, and returns false.
bool python_has(const std::string& modules);

/// Runs tests/pytorch_reference.py with `args`: the test fails (with its output) unless
/// it exits 0; its output is kept as a warning, so the figures it prints are logged.
void python_reference(const std::string& args);

/// A listening socket on an ephemeral loopback port: it holds the port ("in use")
/// until closed.
struct Listener {
  int fd = -1;
  int port = 0;
  Listener();
  ~Listener() { close(); }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  void close();
};

/// Writes a checkpoint as the first format ("alexnet-checkpoint-1") did: the model's
/// parameters, its options as the given "key=value" lines, the extras as given.
void save_format1(const torch::nn::Module& model, const std::string& path, const std::string& options,
                  const std::map<std::string, at::Tensor>& tensors = {},
                  const std::map<std::string, std::string>& strings = {});

/// The model options of AlexNetOptions::caffe() at input 67 with `classes` classes and
/// no dropout, as the first checkpoint format wrote them.
std::string format1_caffe_options(int classes);

/// A loopback port that was free a moment ago.
int free_port();

}  // namespace alexnet::test
