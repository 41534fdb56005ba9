// alexnet train, evaluate and classify: flags onto the library's configuration
// (alexnet::RunConfig, InferenceOptions), the run and inference are the library's.

#include "commands.h"
#include "launcher.h"
#include "progress.h"

#include <alexnet/distributed.h>
#include <alexnet/inference.h>
#include <alexnet/run.h>

#include <spdlog/sinks/basic_file_sink.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

namespace alexnet::app {
namespace fs = std::filesystem;
namespace {

struct TrainFlags {
  RunConfig config;
  std::vector<std::string> given;  // settings named on the command line
  std::string out, resume, dist_backend = "auto";
  bool overwrite = false, allow_changes = false;
  bool precision_auto = false;  // --precision auto
  int nproc_per_node = 1;
  double dist_timeout = 300;

  void set(const std::string& setting, const std::string& value) {
    config.set(setting, value);
    given.push_back(setting);
  }
};

void run_train(TrainFlags& f) {
  if (launched_ranks(f.nproc_per_node)) return;
  const auto world = world_from_environment();
  const bool writer = world.rank == 0;
  const bool resuming = !f.resume.empty();
  const auto dir = resuming ? f.resume : f.out;
  if (dir.empty()) throw std::invalid_argument("give --out RUN for a new run, or --resume RUN");
  std::vector<std::string> changes;
  if (f.precision_auto) {
    const auto& devices = f.config.devices();
    const bool cpu = std::all_of(devices.begin(), devices.end(), [](const c10::Device& d) { return d.is_cpu(); });
    f.config.set("precision", cpu && cpu_bf16() == CpuBf16::kNative ? "bf16" : "fp32");
  }
  RunConfig config = f.config;
  if (resuming) {
    try {
      config = Run::resume_config(dir, f.config, f.given, f.allow_changes, &changes);
    } catch (const ChangeRefused& e) {
      throw std::invalid_argument(flag_of(e.option()) + " " + e.rest() + " (--allow-changes resumes anyway)");
    }
  } else if (writer) {
    try {
      Run::prepare(dir, config, f.overwrite);
    } catch (const RunExists&) {
      throw std::runtime_error("run '" + dir + "' exists: --resume " + dir + " to continue it, or --overwrite to replace it");
    }
  }
  if (writer) {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>((fs::path(dir) / "train.log").string());
    sink->set_pattern("[%Y-%m-%d %H:%M:%S] %l: %v");
    spdlog::default_logger()->sinks().push_back(sink);
    spdlog::default_logger()->flush_on(spdlog::level::info);  // `tail -f train.log` sees each line
  }
  for (const auto& change : changes) spdlog::info("resume: {} (kept for the next resume)", change);
  // Joined after rank 0 has set up the run directory (the rendezvous waits for every
  // rank), so that no rank reads a stats.pt that --overwrite is about to remove.
  auto devices = config.devices();
  const auto group = join_world(world, f.dist_timeout, f.dist_backend, &devices);
  config.devices(devices);

  ProgressLine progress("epoch");
  TrainHooks hooks;
  hooks.on_info = [](const std::string& text) { spdlog::info("{}", text); };
  hooks.on_warning = [](const std::string& text) { spdlog::warn("{}", text); };
  const auto batch = config.train().batch_size();
  hooks.on_step = [&, epoch = int64_t(0)](int64_t e, int64_t step, int64_t steps, double loss, double) mutable {
    if (!writer) return;
    if (e != epoch) progress.restart("epoch " + std::to_string(epoch = e));
    progress.update(static_cast<size_t>(step * batch), static_cast<size_t>(steps * batch), fmt::format("loss {:.4f}", loss));
  };
  hooks.on_epoch = [](const EpochMetrics& m) { spdlog::info("{}", m.to_text()); };
  hooks.stop = &stop_flag();
  auto run = [&] {
    try {
      return Run(dir, config, resuming, group.get(), hooks);
    } catch (...) {
      if (!resuming && writer) fs::remove_all(dir);  // a new run that never started leaves nothing behind
      throw;
    }
  }();
  stop_on_signals(/*announce=*/writer);  // from here on, Ctrl-C checkpoints
  if (run.fit() == Trainer::Outcome::kStopped) {
    if (writer) spdlog::warn("stopped: checkpoint in {}; continue with: alexnet train --resume {}", run.last(), dir);
    std::exit(130);
  }
  spdlog::info("done: {} (last), {} (best)", run.last(), run.best());
}

}  // namespace

void add_train_commands(CLI::App& app) {
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand("train", "Train a network (Section 5 of the paper) into a run directory");
    cmd->add_option("--out", f->out, "Run directory: train.log, metrics.jsonl, last.pt, best.pt, options.txt");
    cmd->add_option("--resume", f->resume,
                    "Continue the run in this directory exactly where it stopped; flags given change its settings");
    cmd->add_flag("--overwrite", f->overwrite, "Replace an existing run directory");
    cmd->add_flag("--allow-changes", f->allow_changes,
                  "At --resume, accept changes that make the run differ from an uninterrupted one");
    // Every setting of a run is a flag (batch_size: --batch-size), its help and default
    // the library's.
    const RunConfig defaults;
    for (const auto& setting : RunConfig::settings()) {
      const auto name = setting.name;
      if (setting.is_switch) {
        cmd->add_flag_function(flag_of(name), [f, name](int64_t) { f->set(name, "true"); }, setting.help);
        continue;
      }
      auto choices = setting.choices;
      auto help = setting.help;
      if (name == "precision") {
        // auto: bf16 where the CPU multiplies in bf16, else fp32; the run records which.
        choices.push_back("auto");
        help += ". auto: bf16 for a run on a CPU that multiplies in bf16, else fp32";
      }
      auto* option = cmd->add_option_function<std::string>(
          flag_of(name),
          [f, name](const std::string& v) {
            if (name == "precision" && v == "auto") {
              f->precision_auto = true;  // resolved once the devices are known
              f->given.push_back(name);
              return;
            }
            f->set(name, v);
          },
          help);
      option->default_str(defaults.get(name));
      if (!choices.empty()) option->check(CLI::IsMember(choices));
    }
    cmd->add_flag_function("--skip-bad", [f](int64_t) { f->set("on_error", "skip"); },
                           "Leave out unreadable images instead of stopping (--on-error skip)");
    cmd->add_option("--nproc-per-node", f->nproc_per_node,
                    "Data parallel: start this many processes here (under torchrun or srun, leave it out)")
        ->check(at_least(1))->capture_default_str();
    cmd->add_option("--dist-timeout", f->dist_timeout, "Data parallel: seconds to wait for the other ranks before failing")
        ->check(positive())->capture_default_str();
    cmd->add_option("--dist-backend", f->dist_backend,
                    "Data parallel: auto (nccl when the devices are GPUs and this build has it, else gloo), gloo or nccl")
        ->check(CLI::IsMember({"auto", "gloo", "nccl"}))->capture_default_str();
    cmd->callback([f] { run_train(*f); });
  }
  {
    struct Flags {
      std::string weights, data;
      InferenceOptions options;
      bool json = false;
      int nproc_per_node = 1;
      double dist_timeout = 300;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("evaluate", "Top-1, top-5, loss and per-class accuracy of a checkpoint on a data set");
    cmd->add_option("--weights", f->weights, "Checkpoint written by alexnet train (best.pt)")->required();
    cmd->add_option("--data", f->data, "Image folder, list file or packed set")->required();
    add_inference_flags(cmd, f->options);
    cmd->add_flag("--json", f->json, "Print one JSON object");
    cmd->add_option("--nproc-per-node", f->nproc_per_node, "Split the images over this many processes here")
        ->check(at_least(1))->capture_default_str();
    cmd->add_option("--dist-timeout", f->dist_timeout, "Seconds to wait for the other ranks before failing")
        ->check(positive())->capture_default_str();
    cmd->callback([f] {
      if (launched_ranks(f->nproc_per_node)) return;
      validate(f->options);
      const auto group = join_world(world_from_environment(), f->dist_timeout, "gloo");
      auto [model, pre] = load_for_inference(f->weights);
      const auto e = evaluate(model, data::open_source(f->data), pre, f->options, group.get());
      if (group && group->rank() != 0) return;  // rank 0 reports the whole set
      std::cout << (f->json ? e.to_json(pre.classes) + "\n" : e.to_text(pre.classes)) << std::flush;
      if (e.skipped) spdlog::warn("left out {} unreadable images", e.skipped);
    });
  }
  {
    struct Flags {
      std::string weights;
      std::vector<std::string> images;
      int64_t top = 5;
      bool ten_crop = false, json = false;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("classify", "The most probable classes of images");
    cmd->add_option("--weights", f->weights, "Checkpoint written by alexnet train (best.pt)")->required();
    cmd->add_option("images", f->images, "Image files")->required();
    cmd->add_option("--top", f->top, "How many classes to show")->check(at_least(1))->capture_default_str();
    cmd->add_flag("--ten-crop", f->ten_crop, "Average the softmax of ten crops (Section 4.1)");
    cmd->add_flag("--json", f->json, "One JSON object per image: image, top [{label, index, probability}]");
    cmd->callback([f] {
      auto [model, pre] = load_for_inference(f->weights);
      const auto probabilities = classify(model, f->images, pre, f->ten_crop);
      for (const auto& c : top_classes(probabilities, f->images, pre.classes, f->top)) {
        std::cout << (f->json ? c.to_json() + "\n" : c.to_text()) << std::flush;
      }
    });
  }
}

}  // namespace alexnet::app
