#pragma once

// Each subcommand registers its flags on the CLI and runs through a callback.
// Subcommands parse flags, build the library's config structs and call the library:
// nothing another C++ program would need lives here.

#include <alexnet/inference.h>

#include <CLI/CLI.hpp>

namespace alexnet::app {

/// The flag for a library option's name: "batch_size" -> "--batch-size".
inline std::string flag_of(std::string option) {
  for (auto& c : option) c = c == '_' ? '-' : c;
  return "--" + option;
}

/// --skip-bad, --batch-size, --workers and (with `ten_crop`) --ten-crop onto `options`
/// (which must outlive the command).
void add_inference_flags(CLI::App* cmd, InferenceOptions& options, bool ten_crop = true);

void add_summary(CLI::App& app);
void add_data_commands(CLI::App& app);
void add_train_commands(CLI::App& app);
void add_visual_commands(CLI::App& app);
void add_convert_commands(CLI::App& app);

}  // namespace alexnet::app
