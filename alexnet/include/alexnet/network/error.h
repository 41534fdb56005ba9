#pragma once

#include <exception>
#include <stdexcept>
#include <string>

namespace alexnet {

/// The one-line message of an exception: for LibTorch's c10::Error, the message
/// without the C++ backtrace and source location that `what()` appends.
std::string error_message(const std::exception& error);

/// An option has a value the library cannot use. `option()` names it as the option
/// structs do ("batch_size", "precision"), and the message begins with that name:
/// "batch_size must be positive, got 0". The command-line tool shows the flag instead
/// ("--batch-size must be positive, got 0").
class OptionError : public std::invalid_argument {
 public:
  /// `rest` follows the option's name in the message.
  OptionError(const std::string& option, const std::string& rest)
      : std::invalid_argument(option + " " + rest), option_(option), rest_(rest) {}
  const std::string& option() const noexcept { return option_; }
  const std::string& rest() const noexcept { return rest_; }

 private:
  std::string option_, rest_;
};

/// A long operation (statistics, evaluation, a run's validation) saw its stop flag set
/// (TrainHooks::stop, InferenceOptions::stop) and ended early, writing nothing.
class Stopped : public std::runtime_error {
 public:
  explicit Stopped(const std::string& what) : std::runtime_error(what + ": stopped") {}
};

/// A failure whose remedy is an option: the message ends "(OPTION)", naming it as the
/// option structs do ("... lower the learning rate (lr)"); the command-line tool names
/// its flag instead ("(--lr)").
class OptionHint : public std::runtime_error {
 public:
  OptionHint(const std::string& text, const std::string& option)
      : std::runtime_error(text + " (" + option + ")"), text_(text), option_(option) {}
  const std::string& text() const noexcept { return text_; }
  const std::string& option() const noexcept { return option_; }

 private:
  std::string text_, option_;
};

}  // namespace alexnet
