#include "commands.h"

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/pytorch.h>
#include <alexnet/network/preprocessing.h>
#include <alexnet/network/torchscript.h>
#ifdef ALEXNET_INTEROP
#include <alexnet/interop/caffe.h>
#include <alexnet/interop/onnx.h>
#endif

#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace alexnet::app {
namespace fs = std::filesystem;
namespace {

void refuse_existing(const std::string& path, bool overwrite) {
  if (fs::exists(path) && !overwrite) {
    throw std::runtime_error("'" + path + "' exists; --overwrite to replace it");
  }
  check_writable(path, "output");  // before the reading and converting
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

#ifndef ALEXNET_INTEROP
[[noreturn]] void no_interop() {
  throw std::runtime_error("this build has no ONNX export or Caffe import (libonnx-dev and libprotobuf-dev were "
                           "not found when it was built)");
}
#endif

}  // namespace

void add_convert_commands(CLI::App& app) {
  {
    struct Flags {
      std::string from = "torchvision", in, out, classes, mean;
      int64_t input_size = 227;
      bool overwrite = false;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("convert", "Import weights saved by PyTorch (torch.save of a state dict) or Caffe "
                                              "(a .caffemodel) as a checkpoint");
    cmd->add_option("--from", f->from, "The weights' origin: torchvision's AlexNet, or Caffe's bvlc_alexnet / "
                                       "bvlc_reference_caffenet")
        ->check(CLI::IsMember({"torchvision", "caffe"}))->capture_default_str();
    cmd->add_option("weights", f->in, "A .pth file (zip or legacy format; a state dict, or a dict wrapping one), or "
                                      "a .caffemodel with --from caffe")
        ->required();
    cmd->add_option("--mean", f->mean, "Caffe: the mean image (.binaryproto); default: Caffe's ImageNet channel means");
    cmd->add_option("--input-size", f->input_size, "Caffe: the network's input side (its crop_size)")
        ->capture_default_str();
    cmd->add_option("--out", f->out, "The checkpoint to write")->required();
    cmd->add_option("--class-names", f->classes,
                    "File of class names, one per line, in output order (default: the indices)");
    cmd->add_option("--classes", f->classes)->group("");  // the old name, hidden
    cmd->add_flag("--overwrite", f->overwrite, "Replace an existing --out");
    cmd->callback([f] {
      refuse_existing(f->out, f->overwrite);
      // The class file is checked against the weights' outputs by convert_torchvision.
      const auto names = f->classes.empty() ? std::vector<std::string>{} : read_classes(f->classes);
      if (f->from == "caffe") {
#ifdef ALEXNET_INTEROP
        CaffeOptions options;
        options.mean = f->mean;
        options.classes = names;
        options.input_size = f->input_size;
        const auto model = convert_caffe(f->in, f->out, options);
        if (names.empty()) spdlog::warn("no --class-names: the {} classes are named by their indices", model->options.num_classes());
        spdlog::info("{} -> {} (Caffe, {}, {} classes; BGR made RGB at conv1; mean: {})", f->in, f->out,
                     model->options.pool_before_lrn() ? "CaffeNet's order" : "bvlc_alexnet's order",
                     model->options.num_classes(), f->mean.empty() ? "Caffe's ImageNet channel means" : f->mean);
        return;
#else
        no_interop();
#endif
      }
      if (!f->mean.empty()) throw std::runtime_error("--mean is for --from caffe");
      const auto model = convert_torchvision(f->in, f->out, names);
      const auto classes = model->options.num_classes();
      if (names.empty()) spdlog::warn("no --class-names: the {} classes are named by their indices", classes);
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
    auto* cmd = app.add_subcommand("export", "Write a checkpoint's network for other systems: ONNX, TorchScript, or "
                                             "its weights as a PyTorch state dict");
    cmd->add_option("--weights", f->weights, "A checkpoint")->required();
    cmd->add_option("--format", f->format,
                    "onnx: an ONNX model (opset 11; ONNX Runtime, OpenCV's DNN), preprocessing in its metadata; "
                    "torchscript: a module torch.jit.load runs; torchvision: torchvision.models.alexnet's state dict "
                    "(torchvision preset); grouped: the paper's towers as groups = 2 layers (paper and caffe "
                    "presets; see docs/deployment.md)")
        ->check(CLI::IsMember({"onnx", "torchscript", "torchvision", "grouped"}))->required();
    cmd->add_option("--out", f->out, "The file to write")->required();
    cmd->add_flag("--overwrite", f->overwrite, "Replace an existing --out");
    cmd->callback([f] {
      refuse_existing(f->out, f->overwrite);
      if (f->format == "onnx" || f->format == "torchscript") {
        auto [model, pre] = load_for_inference(f->weights);
        if (f->format == "torchscript") {
          save_torchscript(*model, pre, f->out);
        } else {
#ifdef ALEXNET_INTEROP
          save_onnx(*model, pre, f->out);
#else
          no_interop();
#endif
        }
        spdlog::info("{} -> {} ({}, input images [N, 3, {}, {}], {} classes)", f->weights, f->out, f->format,
                     pre.crop, pre.crop, model->options.num_classes());
        return;
      }
      auto model = load(f->weights);
      const bool torchvision = model->options.architecture() == Architecture::kTorchvision;
      if (torchvision != (f->format == "torchvision")) {
        throw std::runtime_error("'" + f->weights + "' holds the " + name_of(model->options.architecture()) +
                                 " network; export it with --format " + (torchvision ? "torchvision" : "grouped"));
      }
      const auto state = to_state_dict(*model);
      write_state_dict(state, f->out);
      spdlog::info("{} tensors -> {} ({} layout)", state.size(), f->out, f->format);
    });
  }
}

}  // namespace alexnet::app
