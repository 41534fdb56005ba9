#include "commands.h"

#include <alexnet/summary.h>

#include <iostream>
#include <memory>
#include <string>

namespace alexnet::app {

void add_summary(CLI::App& app) {
  struct Flags {
    std::string arch = "paper";
    int64_t input_size = 0;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("summary", "Print the layers, parameters and multiply-adds of a network");
  cmd->add_option("--arch", flags->arch, "Preset: paper, caffe or torchvision")
      ->check(CLI::IsMember(preset_names()))
      ->capture_default_str();
  cmd->add_option("--input-size", flags->input_size,
                  "Input side in pixels (default: the preset's, 227 or 224; 224 pads conv1 by 2)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--json", flags->json, "Print one JSON object instead of a table");
  cmd->callback([flags] {
    AlexNet model(preset(flags->arch, flags->input_size).init(Init::kPyTorch));
    const auto summary = summarize(*model);
    std::cout << (flags->json ? summary.to_json() + "\n" : summary.to_table());
  });
}

}  // namespace alexnet::app
