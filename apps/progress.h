#pragma once

// Progress for long commands: a line redrawn in place on a terminal, or a log line
// every tenth of the way otherwise (CI logs, files).

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <unistd.h>

namespace alexnet::app {

class ProgressLine {
 public:
  explicit ProgressLine(std::string what) : what_(std::move(what)), tty_(::isatty(2) != 0) {}
  /// Rate and ETA count from here.
  void restart(std::string what) {
    what_ = std::move(what);
    last_tenth_ = 0;
    start_ = std::chrono::steady_clock::now();
  }

  void update(size_t done, size_t total, const std::string& extra = "") {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = seconds > 0 ? done / seconds : 0.0;
    const double eta = rate > 0 ? (total - done) / rate : 0.0;
    if (tty_) {
      std::fprintf(stderr, "\r%s %zu/%zu (%3.0f%%) %s%.0f/s ETA %.0fs   ", what_.c_str(), done, total,
                   total ? 100.0 * done / total : 100.0, extra.c_str(), rate, eta);
      if (done == total) std::fputc('\n', stderr);
      std::fflush(stderr);
    } else if (total > 0 && (done * 10 / total != last_tenth_ || done == total)) {
      last_tenth_ = done * 10 / total;
      spdlog::info("{} {}/{} ({:.0f}%) {}{:.0f}/s", what_, done, total, 100.0 * done / total, extra, rate);
    }
  }

 private:
  std::string what_;
  bool tty_;
  size_t last_tenth_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace alexnet::app
