#pragma once

// Each subcommand registers its flags on the CLI and runs through a callback.
// Subcommands parse flags, build the library's config structs and call the library:
// nothing another C++ program would need lives here.

#include <alexnet/network/numbers.h>
#include <alexnet/train/inference.h>

#include <CLI/CLI.hpp>

#include <functional>
#include <sstream>
#include <string>

namespace alexnet::app {

inline std::string number_text(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

/// A check for a flag's number, in plain words ("must be at least 1, got 0"), where
/// CLI11's own prints the whole range of a double.
inline CLI::Validator at_least(double low) {
  return CLI::Validator(
      [low](std::string& text) -> std::string {
        const auto v = to_number<double>(text);
        if (v && *v >= low) return "";
        return "must be at least " + number_text(low) + ", got " + text;
      },
      ">=" + number_text(low));
}
/// The same for a number that must be above zero (a fraction is fine).
inline CLI::Validator positive() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const auto v = to_number<double>(text);
        if (v && *v > 0) return "";
        return "must be positive, got " + text;
      },
      ">0");
}

/// The flag for a library option's name: "batch_size" -> "--batch-size".
inline std::string flag_of(std::string option) {
  for (auto& c : option) c = c == '_' ? '-' : c;
  return "--" + option;
}

/// --skip-bad, --batch-size, --workers and (with `ten_crop`) --ten-crop onto `options`
/// (which must outlive the command).
void add_inference_flags(CLI::App* cmd, InferenceOptions& options, bool ten_crop = true);
/// --precision fp32|bf16|auto into `options` (default auto); `note` says what auto
/// takes first, where it takes something else first.
void add_precision_flag(CLI::App* cmd, InferenceOptions& options, const std::string& note = "");
/// Logs the precision `model` infers at when `asked` (auto resolved, and why), once
/// before the work starts.
void say_precision(const AlexNetImpl& model, Precision asked);

/// A flag for each of alexnet::RunConfig's settings that `keep` accepts, named, explained
/// and defaulted as the library does (batch_size: --batch-size; a switch: --NAME and
/// --no-NAME); `set(setting, text)` receives each one given.
void add_setting_flags(CLI::App* cmd, const std::function<bool(const std::string&)>& keep,
                       const std::function<void(const std::string&, const std::string&)>& set);

void add_summary(CLI::App& app);
void add_data_commands(CLI::App& app);
void add_train_commands(CLI::App& app);
void add_visual_commands(CLI::App& app);
void add_convert_commands(CLI::App& app);
void add_ablate_command(CLI::App& app);

}  // namespace alexnet::app
