#include "helpers.h"

#include <catch2/catch.hpp>

#include <array>
#include <cstdlib>
#include <iostream>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

namespace alexnet::test {

std::string temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  const auto dir = fs::temp_directory_path() /
                   ("alexnet-test-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
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

void skip(const std::string& why) {
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

}  // namespace alexnet::test
