// alexnet train, evaluate and classify: flags onto the library's configuration
// (alexnet::RunConfig, InferenceOptions), the run and inference are the library's.

#include "commands.h"
#include "launcher.h"
#include "progress.h"

#include <alexnet/distributed.h>
#include <alexnet/inference.h>
#include <alexnet/run.h>

#include <torch/cuda.h>

#include <spdlog/sinks/basic_file_sink.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <unistd.h>

namespace alexnet::app {
namespace fs = std::filesystem;
namespace {

// Set by the first Ctrl-C or SIGTERM: the trainer finishes its step and checkpoints.
std::atomic<bool> stop_requested{false};
// Whether this process says so (under data parallelism, rank 0 speaks for all).
volatile std::sig_atomic_t announce_stop = 1;

extern "C" void on_signal(int) {
  if (stop_requested.exchange(true)) ::_exit(130);  // the second one stops at once
  const char note[] = "\nstopping after this step (again to stop at once)\n";
  if (announce_stop) {
    [[maybe_unused]] auto written = ::write(2, note, sizeof(note) - 1);
  }
}

// This process's place in a data-parallel world (torchrun's, Slurm's or
// --nproc-per-node's environment). Ranks other than 0 report warnings and errors
// only, marked with their rank: one voice.
DistributedOptions world_from_environment() {
  auto options = DistributedOptions::from_environment();
  if (options.rank != 0) {
    spdlog::set_level(spdlog::level::warn);
    spdlog::set_pattern("%^%l%$ [rank " + std::to_string(options.rank) + "]: %v");
  }
  return options;
}

// Joins the world, or nullptr for a world of one. `devices`, when given, become this
// replica's (rank_devices: shifted by LOCAL_RANK), and its first GPU is the rank's GPU
// (so that the "auto" backend is NCCL when this build has it).
std::unique_ptr<ProcessGroup> join_world(DistributedOptions options, double timeout_seconds, const std::string& backend,
                                         std::vector<c10::Device>* devices = nullptr) {
  if (options.world_size == 1) return nullptr;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  if (devices) {
    *devices = rank_devices(*devices, options.local_rank, static_cast<int>(torch::cuda::device_count()));
    for (const auto& d : *devices) {
      if (d.is_cuda() && options.cuda_device < 0) options.cuda_device = d.index();
    }
  }
  if (backend == "nccl" && options.cuda_device < 0) throw std::invalid_argument("--dist-backend nccl needs CUDA --devices");
  options.backend = backend;
  auto group = std::make_unique<ProcessGroup>(options);
  spdlog::info("data parallel: rank {} of {} ({}, rendezvous {}:{})", options.rank, options.world_size,
               group->options().backend, options.master_addr, options.master_port);
  return group;
}

// The flags of `alexnet train` that are settings of a run, by setting name (the flag is
// the name with dashes), with their choices where the setting is one of a few. Defaults
// show in --help from RunConfig itself.
struct SettingFlag {
  const char* setting;
  const char* help;
  std::vector<std::string> choices;
};
const std::vector<SettingFlag>& setting_flags() {
  static const std::vector<SettingFlag> flags{
      {"data", "Training data: image folder, list file or packed set", {}},
      {"val", "Validation data, evaluated after every epoch", {}},
      {"stats", "Statistics file (alexnet stats); default: computed into RUN/stats.pt", {}},
      {"arch", "The network's preset", preset_names()},
      {"init", "Initialisation (default: the preset's)", name_list<Init>()},
      {"input_size", "Crop side the network sees (0: the preset's)", {}},
      {"resize", "Side images are brought to before cropping (Section 2)", {}},
      {"mean", "Subtract the mean image or the channel means (default: image for paper and caffe, channels for "
               "torchvision)",
       name_list<Mean>()},
      {"devices", "cpu, cuda:0, or cuda:0,cuda:1 (one tower each)", {}},
      {"execution", "How the towers run", name_list<Execution>()},
      {"epochs", "Epochs", {}},
      {"batch_size", "Examples per step", {}},
      {"lr", "Learning rate", {}},
      {"momentum", "Momentum", {}},
      {"weight_decay", "Weight decay", {}},
      {"lr_policy", "plateau (divide by 10 when validation stalls), step or fixed", name_list<LrPolicy>()},
      {"patience", "Epochs without improvement before the plateau policy divides", {}},
      {"step_epochs", "Epochs between divisions under the step policy", {}},
      {"dropout", "Dropout probability on fc6 and fc7", {}},
      {"pca_std", "PCA colour noise: standard deviation of alpha (0: off)", {}},
      {"workers", "Data loading threads (0: in the training thread)", {}},
      {"seed", "Seeds initialisation, data order, augmentation and dropout", {}},
      {"precision", "fp32; bf16 (autocast, CPU or CUDA); fp16 (autocast and loss scaling, CUDA)",
       name_list<Precision>()},
  };
  return flags;
}

std::string flag_of(std::string setting) {
  std::replace(setting.begin(), setting.end(), '_', '-');
  return "--" + setting;
}

struct TrainFlags {
  RunConfig config;
  std::vector<std::string> given;  // settings named on the command line
  std::string out, resume, dist_backend = "auto";
  bool overwrite = false, allow_changes = false;
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
  hooks.stop = &stop_requested;
  hooks.on_info = [](const std::string& text) { spdlog::info("{}", text); };
  hooks.on_warning = [](const std::string& text) { spdlog::warn("{}", text); };
  const auto batch = config.train().batch_size();
  hooks.on_step = [&, epoch = int64_t(0)](int64_t e, int64_t step, int64_t steps, double loss, double) mutable {
    if (!writer) return;
    if (e != epoch) progress.restart("epoch " + std::to_string(epoch = e));
    progress.update(static_cast<size_t>(step * batch), static_cast<size_t>(steps * batch), fmt::format("loss {:.4f}", loss));
  };
  hooks.on_epoch = [](const EpochMetrics& m) {
    spdlog::info("epoch {}: train loss {:.4f} top-1 {:.2f}% | val loss {:.4f} top-1 {:.2f}% top-5 {:.2f}% | lr {:g} | "
                 "{:.0f} images/s, {:.0f} s",
                 m.epoch, m.train_loss, 100 * m.train_top1, m.val_loss, 100 * m.val_top1, 100 * m.val_top5, m.lr,
                 m.images_per_second, m.seconds);
  };
  Run run(dir, config, resuming, group.get(), hooks);
  if (!writer) announce_stop = 0;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
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
    const RunConfig defaults;
    for (const auto& flag : setting_flags()) {
      const std::string name = flag.setting;
      auto* option = cmd->add_option_function<std::string>(
          flag_of(name), [f, name](const std::string& v) { f->set(name, v); }, flag.help);
      option->default_str(defaults.get(name));
      if (!flag.choices.empty()) option->check(CLI::IsMember(flag.choices));
    }
    for (const auto& [flag, setting, value, help] :
         std::vector<std::tuple<const char*, const char*, const char*, const char*>>{
             {"--ten-crop", "ten_crop", "true", "Validate on ten crops instead of the centre crop"},
             {"--skip-bad", "on_error", "skip", "Leave out unreadable images instead of stopping"},
             {"--channels-last", "channels_last", "true", "Channels-last (NHWC) convolutions, faster on GPUs"},
             {"--tf32", "tf32", "true",
              "Allow TensorFloat-32 on CUDA (Ampere and later): faster, ~10-bit mantissa products"}}) {
      cmd->add_flag_function(flag, [f, setting = std::string(setting), value = std::string(value)](int64_t) {
        f->set(setting, value);
      }, help);
    }
    cmd->add_option("--nproc-per-node", f->nproc_per_node,
                    "Data parallel: start this many processes here (under torchrun or srun, leave it out)")
        ->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--dist-timeout", f->dist_timeout, "Data parallel: seconds to wait for the other ranks before failing")
        ->check(CLI::PositiveNumber)->capture_default_str();
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
    cmd->add_flag("--ten-crop", f->options.ten_crop(), "Average the softmax of ten crops (Section 4.1)");
    cmd->add_flag("--json", f->json, "Print one JSON object");
    cmd->add_flag_function("--skip-bad", [f](int64_t) { f->options.on_error(data::OnError::kSkip); },
                           "Leave out unreadable images instead of stopping");
    cmd->add_option("--batch-size", f->options.batch_size(), "Images per forward pass")->capture_default_str();
    cmd->add_option("--workers", f->options.workers(), "Data loading threads")->capture_default_str();
    cmd->add_option("--nproc-per-node", f->nproc_per_node, "Split the images over this many processes here")
        ->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--dist-timeout", f->dist_timeout, "Seconds to wait for the other ranks before failing")
        ->check(CLI::PositiveNumber)->capture_default_str();
    cmd->callback([f] {
      if (launched_ranks(f->nproc_per_node)) return;
      validate(f->options);
      const auto group = join_world(world_from_environment(), f->dist_timeout, "gloo");
      auto [model, pre] = load_for_inference(f->weights);
      const auto e = evaluate(model, data::open_source(f->data), pre, f->options, group.get());
      if (group && group->rank() != 0) return;  // rank 0 reports the whole set
      if (f->json) {
        std::cout << e.to_json(pre.classes) << "\n";
        return;
      }
      std::printf("images %lld\ntop-1 %.2f%%\ntop-5 %.2f%%\nloss %.4f\n", static_cast<long long>(e.images),
                  100 * e.top1, 100 * e.top5, e.loss);
      for (size_t c = 0; c < e.per_class.size(); ++c) {
        std::printf("  %-24s %6.2f%% of %lld\n", (c < pre.classes.size() ? pre.classes[c] : std::to_string(c)).c_str(),
                    100 * e.per_class[c], static_cast<long long>(e.per_class_images[c]));
      }
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
    cmd->add_option("--top", f->top, "How many classes to show")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_flag("--ten-crop", f->ten_crop, "Average the softmax of ten crops (Section 4.1)");
    cmd->add_flag("--json", f->json, "One JSON object per image: image, top [{label, index, probability}]");
    cmd->callback([f] {
      auto [model, pre] = load_for_inference(f->weights);
      const auto probabilities = classify(model, f->images, pre, f->ten_crop);
      for (const auto& c : top_classes(probabilities, f->images, pre.classes, f->top)) {
        if (f->json) {
          std::cout << c.to_json() << "\n";
          continue;
        }
        std::cout << c.image << "\n";
        for (const auto& t : c.top) std::printf("  %6.2f%%  %s (%lld)\n", 100 * t.probability, t.label.c_str(), static_cast<long long>(t.index));
        std::fflush(stdout);
      }
    });
  }
}

}  // namespace alexnet::app
