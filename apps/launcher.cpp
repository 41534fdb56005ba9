#include "launcher.h"

#include <alexnet/network/distributed.h>

#include <spdlog/spdlog.h>
#include <torch/cuda.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

namespace alexnet::app {
namespace {

std::vector<std::string> command_line;
std::atomic<int> signals{0};
std::atomic<bool> stop_requested{false};
volatile std::sig_atomic_t announce_stop = 1;

// The first stops the run after its step, with a checkpoint; a second (schedulers and
// launchers often send two) only says so: stopping at once could cut the checkpoint's
// write and lose the epoch's steps. SIGKILL abandons them.
extern "C" void on_stop_signal(int) {
  const bool again = stop_requested.exchange(true);
  const char first[] = "\nstopping after this step, with a checkpoint\n";
  const char second[] = "\nalready stopping: the checkpoint is being written (SIGKILL abandons it)\n";
  if (announce_stop) {
    [[maybe_unused]] auto written =
        again ? ::write(2, second, sizeof(second) - 1) : ::write(2, first, sizeof(first) - 1);
  }
}

extern "C" void count_signal(int) { signals.fetch_add(1); }

// A port the kernel says is free now (the rendezvous binds it a moment later).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("--nproc-per-node: cannot find a free port on 127.0.0.1");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace

void set_command_line(int argc, char** argv) { command_line.assign(argv, argv + argc); }

const std::atomic<bool>& stop_flag() { return stop_requested; }

void stop_on_signals(bool announce) {
  announce_stop = announce ? 1 : 0;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

bool launched_ranks(int nproc) {
  if (nproc <= 1 || DistributedOptions::in_environment()) return false;
  const int status = launch_local(nproc);
  if (status != 0) throw ExitStatus{status};
  return true;
}

int launch_local(int nproc) {
  // The command again, without --nproc-per-node, and with a fair share of the cores
  // each unless --threads was given.
  std::vector<std::string> args{command_line.front()};
  bool threads_given = false;
  for (size_t i = 1; i < command_line.size(); ++i) {
    const auto& a = command_line[i];
    if (a == "--nproc-per-node") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc-per-node=", 0) == 0) continue;
    threads_given = threads_given || a == "--threads" || a.rfind("--threads=", 0) == 0;
    args.push_back(a);
  }
  if (!threads_given) {
    const auto cores = std::max(1u, std::thread::hardware_concurrency());
    args.insert(args.begin() + 1, {"--threads", std::to_string(std::max(1u, cores / static_cast<unsigned>(nproc)))});
  }
  const char* master_port = std::getenv("MASTER_PORT");
  const auto port = master_port ? std::string(master_port) : std::to_string(free_port());
  spdlog::info("starting {} ranks on 127.0.0.1:{}", nproc, port);

  struct sigaction action {};
  action.sa_handler = count_signal;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  std::vector<pid_t> pids;
  for (int rank = 0; rank < nproc; ++rank) {
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("--nproc-per-node: fork failed");
    if (pid == 0) {
      ::setpgid(0, 0);  // the terminal's Ctrl-C reaches the launcher, which passes it on once
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      ::_exit(127);
    }
    pids.push_back(pid);
  }

  int status_out = 0, forwarded = 0;
  size_t running = pids.size();
  std::vector<bool> done(pids.size(), false);
  auto signal_all = [&](int sig) {
    for (size_t r = 0; r < pids.size(); ++r) {
      if (!done[r]) ::kill(pids[r], sig);
    }
  };
  while (running > 0) {
    const int pending = signals.load();
    if (pending > forwarded) {
      if (forwarded == 0) signal_all(SIGINT);  // once: the ranks stop together and rank 0 checkpoints
      forwarded = pending;
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    for (size_t r = 0; r < pids.size(); ++r) {
      if (pids[r] != pid) continue;
      done[r] = true;
      --running;
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0 && status_out == 0) {
        status_out = code;
        if (running > 0 && forwarded == 0) {
          spdlog::error("rank {} exited with status {}; stopping the other ranks", r, code);
          signal_all(SIGTERM);
        }
      }
    }
  }
  return status_out;
}

DistributedOptions world_from_environment() {
  auto options = DistributedOptions::from_environment();
  if (options.rank != 0) {
    spdlog::set_level(spdlog::level::warn);
    spdlog::set_pattern("%^%l%$ [rank " + std::to_string(options.rank) + "]: %v");
  }
  return options;
}

std::unique_ptr<ProcessGroup> join_world(DistributedOptions options, double timeout_seconds,
                                         const std::string& backend, std::vector<c10::Device>* devices) {
  if (options.world_size == 1) return nullptr;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  if (devices) {
    *devices = rank_devices(*devices, options.local_rank, static_cast<int>(torch::cuda::device_count()));
    for (const auto& d : *devices) {
      if (d.is_cuda() && options.cuda_device < 0) options.cuda_device = d.index();
    }
  }
  if (backend == "nccl" && options.cuda_device < 0) throw std::invalid_argument("--dist-backend nccl needs CUDA --devices");
  options.backend = backend;
  auto group = std::make_unique<ProcessGroup>(options);
  spdlog::info("data parallel: rank {} of {} ({}, rendezvous {}:{})", options.rank, options.world_size,
               group->options().backend, options.master_addr, options.master_port);
  return group;
}

}  // namespace alexnet::app
