#pragma once

// Progress for long commands: a line redrawn in place on a terminal, or a log line
// every tenth of the way otherwise (CI logs, files). Both say how many of what per
// second, and the time left.

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <unistd.h>

namespace alexnet::app {

class ProgressLine {
 public:
  /// `unit`: what `done` and `total` count ("images").
  explicit ProgressLine(std::string what, std::string unit = "images")
      : what_(std::move(what)), unit_(std::move(unit)), tty_(::isatty(2) != 0) {}
  /// Rate and time left count from here.
  void restart(std::string what) {
    what_ = std::move(what);
    last_tenth_ = 0;
    start_ = std::chrono::steady_clock::now();
  }

  void update(size_t done, size_t total, const std::string& extra = "") {
    done = std::min(done, total);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = seconds > 0 ? done / seconds : 0.0;
    const auto line = fmt::format("{} {}/{} ({:.0f}%) {}{:.0f} {}/s, {} left", what_, done, total,
                                  total ? 100.0 * done / total : 100.0, extra.empty() ? "" : extra + ", ", rate,
                                  unit_, rate > 0 ? duration((total - done) / rate) : "?");
    if (tty_) {
      std::fprintf(stderr, "\r%s   ", line.c_str());
      if (done == total) std::fputc('\n', stderr);
      std::fflush(stderr);
    } else if (total > 0 && (done * 10 / total != last_tenth_ || done == total)) {
      last_tenth_ = done * 10 / total;
      spdlog::info("{}", line);
    }
  }

  /// "1h02m", "3m05s", "42s".
  static std::string duration(double seconds) {
    const auto s = static_cast<long long>(seconds + 0.5);
    if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
    if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
    return fmt::format("{}s", s);
  }

 private:
  std::string what_, unit_;
  bool tty_;
  size_t last_tenth_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace alexnet::app
