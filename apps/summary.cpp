#include "commands.h"

#include <alexnet/network/summary.h>

#include <iostream>
#include <memory>
#include <string>

namespace alexnet::app {

void add_inference_flags(CLI::App* cmd, InferenceOptions& options, bool ten_crop) {
  if (ten_crop) cmd->add_flag("--ten-crop", options.ten_crop(), "Average the softmax of ten crops (Section 4.1)");
  cmd->add_flag_function("--skip-bad", [&options](int64_t) { options.on_error(data::OnError::kSkip); },
                         "Leave out unreadable images instead of stopping");
  cmd->add_option("--batch-size", options.batch_size(), "Images per forward pass")->capture_default_str();
  cmd->add_option("--workers", options.workers(), "Data loading threads (0: in the calling thread)")
      ->capture_default_str();
}

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
      ->check(at_least(1));
  cmd->add_flag("--json", flags->json, "Print one JSON object instead of a table");
  cmd->callback([flags] {
    AlexNet model(preset(flags->arch, flags->input_size).init(Init::kPyTorch));
    const auto summary = summarize(*model);
    std::cout << (flags->json ? summary.to_json() + "\n" : summary.to_table());
  });
}

}  // namespace alexnet::app
