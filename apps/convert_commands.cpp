#include "commands.h"

#include <alexnet/checkpoint.h>
#include <alexnet/pytorch.h>
#include <alexnet/preprocessing.h>

#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <memory>

namespace alexnet::app {
namespace fs = std::filesystem;
namespace {

void refuse_existing(const std::string& path, bool overwrite) {
  if (fs::exists(path) && !overwrite) {
    throw std::runtime_error("'" + path + "' exists; --overwrite to replace it");
  }
}

// One class name per line, in output order.
std::vector<std::string> read_classes(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open class names '" + path + "'");
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

}  // namespace

void add_convert_commands(CLI::App& app) {
  {
    struct Flags {
      std::string from = "torchvision", in, out, classes;
      bool overwrite = false;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("convert", "Import weights saved by PyTorch (torch.save of a state dict) as a checkpoint");
    cmd->add_option("--from", f->from, "The network the weights are for")
        ->check(CLI::IsMember({"torchvision"}))->capture_default_str();
    cmd->add_option("weights", f->in, "A .pth file (zip or legacy format; a state dict, or a dict wrapping one)")
        ->required();
    cmd->add_option("--out", f->out, "The checkpoint to write")->required();
    cmd->add_option("--classes", f->classes, "Class names, one per line, in output order (default: the indices)");
    cmd->add_flag("--overwrite", f->overwrite, "Replace an existing --out");
    cmd->callback([f] {
      refuse_existing(f->out, f->overwrite);
      // The class file is checked against the weights' outputs by convert_torchvision.
      const auto names = f->classes.empty() ? std::vector<std::string>{} : read_classes(f->classes);
      const auto model = convert_torchvision(f->in, f->out, names);
      const auto classes = model->options.num_classes();
      if (names.empty()) spdlog::warn("no --classes: the {} classes are named by their indices", classes);
      spdlog::info("{} -> {} (torchvision, {} classes, torchvision's preprocessing: 256, centre 224, "
                   "ImageNet mean and std)", f->in, f->out, classes);
    });
  }
  {
    struct Flags {
      std::string weights, format, out;
      bool overwrite = false;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("export", "Write a checkpoint's weights as a PyTorch state dict (torch.load reads it)");
    cmd->add_option("--weights", f->weights, "A checkpoint")->required();
    cmd->add_option("--format", f->format,
                    "torchvision: torchvision.models.alexnet's keys (torchvision preset); grouped: the paper's "
                    "towers as groups = 2 layers (paper and caffe presets; see the README)")
        ->check(CLI::IsMember({"torchvision", "grouped"}))->required();
    cmd->add_option("--out", f->out, "The .pth file to write")->required();
    cmd->add_flag("--overwrite", f->overwrite, "Replace an existing --out");
    cmd->callback([f] {
      refuse_existing(f->out, f->overwrite);
      auto model = load(f->weights);
      const bool torchvision = model->options.architecture() == Architecture::kTorchvision;
      if (torchvision != (f->format == "torchvision")) {
        throw std::runtime_error("'" + f->weights + "' holds the " + to_string(model->options.architecture()) +
                                 " network; export it with --format " + (torchvision ? "torchvision" : "grouped"));
      }
      const auto state = to_state_dict(*model);
      write_state_dict(state, f->out);
      spdlog::info("{} tensors -> {} ({} layout)", state.size(), f->out, f->format);
    });
  }
}

}  // namespace alexnet::app
