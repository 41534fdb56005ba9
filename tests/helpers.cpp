#include "helpers.h"

#include <catch2/catch.hpp>
#include <torch/serialize/output-archive.h>

#include <array>
#include <fstream>
#include <regex>
#include <cstdlib>
#include <iostream>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace alexnet::test {

namespace {

// The folders temp_dir made, removed when the test process ends (ALEXNET_KEEP_TEMP=1
// keeps them, to look at after a failure).
struct TempDirs {
  std::vector<std::filesystem::path> made;
  ~TempDirs() {
    if (std::getenv("ALEXNET_KEEP_TEMP")) return;
    std::error_code ignored;
    for (const auto& dir : made) std::filesystem::remove_all(dir, ignored);
  }
};
TempDirs temp_dirs;

}  // namespace

std::string temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  const auto dir = fs::temp_directory_path() /
                   ("alexnet-test-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  temp_dirs.made.push_back(dir);
  return dir.string();
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

int64_t memory_status(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

void skip(const std::string& why) {
  if (const char* strict = std::getenv("ALEXNET_STRICT_SKIPS"); strict && *strict && std::string(strict) != "0") {
    FAIL("skipped for a missing prerequisite, which ALEXNET_STRICT_SKIPS does not allow: " << why);
  }
  skip_without_gpu(why);
}

void skip_without_gpu(const std::string& why) {
  if (const char* code = std::getenv("ALEXNET_SKIP_CODE")) {
    std::cout << "skipped: " << why << std::endl;
    std::exit(std::atoi(code));
  }
  WARN("skipped: " << why);
}

int run(const std::string& command, std::string& output, bool merge_stderr) {
  output.clear();
  FILE* pipe = ::popen((command + (merge_stderr ? " 2>&1" : "")).c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run: " + command);
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int bash(const std::string& script, std::string& output) {
  return run("bash -c '" + std::regex_replace(script, std::regex("'"), "'\\''") + "'", output);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Listener::Listener() {
  fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  port = ntohs(address.sin_port);
}

void Listener::close() {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

int free_port() {
  Listener l;
  return l.port;
}

bool python_has(const std::string& modules) {
  std::string out;
  if (run("/usr/bin/python3 -c 'import " + modules + "'", out, true) != 0) {
    skip("Python's " + modules + " not installed (scripts/install-deps.sh installs them): " + out);
    return false;
  }
  return true;
}

void python_reference(const std::string& args) {
  std::string out;
  const int status = run("/usr/bin/python3 " + std::string(ALEXNET_SOURCE_DIR) + "/tests/pytorch_reference.py " + args,
                         out, true);
  INFO(out);
  REQUIRE(status == 0);
  if (!out.empty()) WARN(out);
}

void save_format1(const torch::nn::Module& model, const std::string& path, const std::string& options,
                  const std::map<std::string, at::Tensor>& tensors, const std::map<std::string, std::string>& strings) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string("alexnet-checkpoint-1")));
  archive.write("options", c10::IValue(options));
  c10::Dict<std::string, at::Tensor> weights, extra_tensors;
  for (const auto& p : model.named_parameters()) weights.insert(p.key(), p.value().detach());
  for (const auto& [name, tensor] : tensors) extra_tensors.insert(name, tensor);
  c10::Dict<std::string, std::string> extra_strings;
  for (const auto& [name, text] : strings) extra_strings.insert(name, text);
  archive.write("tensors", c10::IValue(weights));
  archive.write("extra_tensors", c10::IValue(extra_tensors));
  archive.write("extra_strings", c10::IValue(extra_strings));
  archive.save_to(path);
}

std::string format1_caffe_options(int classes) {
  return "architecture=two_tower\nnum_classes=" + std::to_string(classes) +
         "\ninput_size=67\nconv1_padding=0\ndropout=0\ninit=caffe\nexecution=grouped\nlrn_across_towers=1\n"
         "pool_before_lrn=0\nceil_mode=1\nlrn.size=5\nlrn.alpha=0.0001\nlrn.beta=0.75\nlrn.k=1\nlrn.mode=average\n";
}

}  // namespace alexnet::test
