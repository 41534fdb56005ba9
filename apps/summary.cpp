#include "commands.h"

#include <alexnet/network/summary.h>
#include <alexnet/train/inference.h>
#include <alexnet/train/run.h>

#include <spdlog/spdlog.h>

#include <iostream>
#include <memory>
#include <set>
#include <string>

namespace alexnet::app {

void add_precision_flag(CLI::App* cmd, InferenceOptions& options, const std::string& note) {
  options.precision(Precision::kAuto);
  cmd->add_option_function<std::string>(
         "--precision", [&options](const std::string& value) { options.precision(parse<Precision>("precision", value)); },
         "fp32; bf16 (bfloat16 weights and products, half the memory); auto (" +
             (note.empty() ? std::string() : note + "; else ") + "bf16 on CPUs that multiply in bf16, else fp32). Here: " +
             describe(cpu_bf16()))
      ->check(CLI::IsMember({"fp32", "bf16", "auto"}))
      ->default_str("auto");
}

void say_precision(const AlexNetImpl& model, Precision asked) {
  const auto chosen = name_of(inference_precision(model, asked));
  if (asked == Precision::kAuto) {
    spdlog::info("precision {} (auto: {})", chosen, describe(cpu_bf16()));
  } else {
    spdlog::info("precision {}", chosen);
  }
}

void add_inference_flags(CLI::App* cmd, InferenceOptions& options, bool ten_crop) {
  add_precision_flag(cmd, options);
  if (ten_crop) cmd->add_flag("--ten-crop", options.ten_crop(), "Average the softmax of ten crops (Section 4.1)");
  cmd->add_flag_function("--skip-bad", [&options](int64_t) { options.on_error(data::OnError::kSkip); },
                         "Leave out unreadable images instead of stopping");
  cmd->add_option("--batch-size", options.batch_size(), "Images per forward pass")->capture_default_str();
  cmd->add_option("--workers", options.workers(), "Data loading threads (0: in the calling thread)")
      ->capture_default_str();
}

void add_summary(CLI::App& app) {
  struct Flags {
    RunConfig config;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("summary", "Print the layers, parameters and multiply-adds of a network");
  // The network's settings, as alexnet train takes them: the preset, the input size and
  // the paper's alternatives (activation, towers, lrn, pooling).
  static const std::set<std::string> network{"arch", "input_size", "activation", "towers", "lrn", "pool_size", "pool_stride"};
  add_setting_flags(cmd, [](const std::string& name) { return network.count(name) > 0; },
                    [flags](const std::string& name, const std::string& value) { flags->config.set(name, value); });
  cmd->add_flag("--json", flags->json, "Print one JSON object instead of a table");
  cmd->callback([flags] {
    AlexNet model(flags->config.model(1000).init(Init::kPyTorch));
    const auto summary = summarize(*model);
    std::cout << (flags->json ? summary.to_json() + "\n" : summary.to_table());
  });
}

}  // namespace alexnet::app
