#pragma once

// Each subcommand registers its flags on the CLI and runs through a callback.
// Subcommands parse flags, build the library's config structs and call the library:
// nothing another C++ program would need lives here.

#include <CLI/CLI.hpp>

namespace alexnet::app {

void add_summary(CLI::App& app);
void add_data_commands(CLI::App& app);
void add_train_commands(CLI::App& app);
void add_visual_commands(CLI::App& app);
void add_convert_commands(CLI::App& app);

}  // namespace alexnet::app
