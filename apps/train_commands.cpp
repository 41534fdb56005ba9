// alexnet train, evaluate and classify: flags onto the library's configuration
// (alexnet::RunConfig, InferenceOptions), the run and inference are the library's.

#include "commands.h"
#include "launcher.h"
#include "progress.h"

#include <alexnet/network/distributed.h>
#include <alexnet/train/inference.h>
#include <alexnet/train/run.h>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

namespace alexnet::app {
namespace fs = std::filesystem;
namespace {

struct TrainFlags {
  RunConfig config;
  std::vector<std::pair<std::string, std::string>> given;  // settings named on the command line, in order
  std::string out, resume, dist_backend = "auto";
  bool overwrite = false, allow_changes = false;
  int nproc_per_node = 1;
  double dist_timeout = 300;

  void set(const std::string& setting, const std::string& value) {
    config.set(setting, value);
    given.emplace_back(setting, value);
  }
};

// The log of a run, RUN/train.log: what was said while the run was opened (kept in
// memory until then: the folder may not exist yet), then everything after.
class RunLog {
 public:
  RunLog() : early_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000)) {
    spdlog::default_logger()->sinks().push_back(early_);
  }
  void open(const std::string& dir) {
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>((fs::path(dir) / "train.log").string());
    file->set_pattern("[%Y-%m-%d %H:%M:%S] %l: %v");
    for (const auto& message : early_->last_raw()) file->log(message);
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), early_), sinks.end());
    sinks.push_back(file);
    spdlog::default_logger()->flush_on(spdlog::level::info);  // `tail -f train.log` sees each line
  }
  ~RunLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), early_), sinks.end());
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> early_;
};

void run_train(const TrainFlags& f) {
  if (launched_ranks(f.nproc_per_node)) return;
  const bool resuming = !f.resume.empty();
  const auto dir = resuming ? f.resume : f.out;
  if (dir.empty()) throw std::invalid_argument("give --out RUN for a new run, or --resume RUN");
  const auto world = world_from_environment();
  // This rank's devices (shifted by LOCAL_RANK under data parallelism) and its group.
  auto devices = (resuming && std::none_of(f.given.begin(), f.given.end(), [](const auto& g) { return g.first == "devices"; }))
                     ? Run::config_of(dir).devices()
                     : f.config.devices();
  const auto group = join_world(world, f.dist_timeout, f.dist_backend, &devices);

  ProgressLine progress("epoch");
  TrainHooks hooks;
  hooks.on_info = [](const std::string& text) { spdlog::info("{}", text); };
  hooks.on_warning = [](const std::string& text) { spdlog::warn("{}", text); };
  int64_t batch = 0;  // the run's, once it is open
  hooks.on_step = [&, epoch = int64_t(0)](int64_t e, int64_t step, int64_t steps, double loss, double) mutable {
    if (e != epoch) progress.restart("epoch " + std::to_string(epoch = e));
    progress.update(static_cast<size_t>(step * batch), static_cast<size_t>(steps * batch), fmt::format("loss {:.4f}", loss));
  };
  hooks.on_epoch = [](const EpochMetrics& m) { spdlog::info("{}", m.to_text()); };
  hooks.stop = &stop_flag();
  const auto options =
      RunOptions().overwrite(f.overwrite).allow_changes(f.allow_changes).group(group.get()).hooks(hooks);

  // A run's log lives in its folder: at once for a run that exists (what its resume
  // says goes there, a failure too), once made for a new one.
  RunLog log;
  std::error_code error;
  const bool lead = lead_rank(group.get());
  if (resuming && lead && fs::is_directory(dir, error)) log.open(dir);
  // From here on Ctrl-C stops: while the run opens (its statistics can take minutes) it
  // is not started and its folder is left as it was; once training, it checkpoints.
  stop_on_signals(/*announce=*/lead);
  auto open = [&] {
    if (!resuming) {
      auto config = f.config;
      config.devices(devices);
      try {
        return Run::create(dir, config, options);
      } catch (const RunExists&) {
        throw std::runtime_error("run '" + dir + "' exists: --resume " + dir + " to continue it, or --overwrite to replace it");
      }
    }
    try {
      return Run::resume(dir, [&](RunConfig& c) {
        for (const auto& [setting, value] : f.given) c.set(setting, value);
        c.devices(devices);
      }, options);
    } catch (const ChangeRefused& e) {
      throw OptionError(e.option(), e.rest() + " (--allow-changes resumes anyway)");
    }
  };
  auto run = [&] {
    try {
      return open();
    } catch (const Stopped& e) {
      if (lead) spdlog::warn("{} before training began: {}", e.what(), resuming ? "the run is as it was" : "no run was made");
      throw ExitStatus{130};
    }
  }();
  batch = run.config().train().batch_size();
  if (!resuming && lead) log.open(dir);
  for (const auto& change : run.changes()) spdlog::info("resume: {} (kept for the next resume)", change);
  if (run.fit() == Run::Outcome::kStopped) {
    if (lead) spdlog::warn("stopped: checkpoint in {}; continue with: alexnet train --resume {}", run.last(), dir);
    throw ExitStatus{130};
  }
  if (fs::exists(run.best())) {
    spdlog::info("done: {} (last), {} (best)", run.last(), run.best());
  } else {
    spdlog::info("done: {} (last)", run.last());
  }
}

}  // namespace

void add_setting_flags(CLI::App* cmd, const std::function<bool(const std::string&)>& keep,
                       const std::function<void(const std::string&, const std::string&)>& set) {
  const RunConfig defaults;
  for (const auto& setting : RunConfig::settings()) {
    const auto name = setting.name;
    if (!keep(name)) continue;
    if (setting.kind == RunConfig::Setting::Kind::kSwitch) {
      // --NAME and --no-NAME, whichever the default is.
      const bool on = defaults.get(name) == "true";
      cmd->add_flag_function(flag_of(name), [set, name](int64_t) { set(name, "true"); },
                             setting.help + (on ? " (default: on)" : ""));
      cmd->add_flag_function("--no-" + flag_of(name).substr(2), [set, name](int64_t) { set(name, "false"); },
                             on ? "Off" : "Off (default)");
      continue;
    }
    auto* option = cmd->add_option_function<std::string>(
        flag_of(name), [set, name](const std::string& v) { set(name, v); }, setting.help);
    option->default_str(defaults.get(name));
    // The type shown in --help: the library parses the text, CLI11 only carries it.
    if (setting.kind == RunConfig::Setting::Kind::kWhole) option->type_name("INT");
    if (setting.kind == RunConfig::Setting::Kind::kReal) option->type_name("FLOAT");
    if (!setting.choices.empty()) option->check(CLI::IsMember(setting.choices));
  }
}

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
    add_setting_flags(cmd, [](const std::string&) { return true; },
                      [f](const std::string& name, const std::string& value) { f->set(name, value); });
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
      auto [model, pre] = load_for_inference(f->weights, f->options.precision());
      const auto source = data::open_source(f->data);
      if (lead_rank(group.get())) say_precision(*model, f->options.precision());
      if (const auto note = data::describe_left_out(*source); !note.empty() && lead_rank(group.get())) {
        spdlog::warn("{}", note);
      }
      const auto e = evaluate(model, source, pre, f->options, group.get());
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
      InferenceOptions options;
      bool json = false, logits = false;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("classify", "The most probable classes of images");
    cmd->add_option("--weights", f->weights, "Checkpoint written by alexnet train (best.pt)")->required();
    cmd->add_option("images", f->images, "Image files")->required();
    cmd->add_option("--top", f->top, "How many classes to show")->check(at_least(1))->capture_default_str();
    cmd->add_flag("--ten-crop", f->options.ten_crop(), "Average the softmax of ten crops (Section 4.1)");
    add_precision_flag(cmd, f->options);
    cmd->add_flag("--json", f->json, "One JSON object per image: image, top [{label, index, probability}] (and logits)");
    cmd->add_flag("--logits", f->logits, "Also every class's logit (fc8's output before the softmax), in class order");
    cmd->callback([f] {
      if (f->logits && f->options.ten_crop()) {
        throw std::invalid_argument("--logits with --ten-crop: ten crops have ten rows of logits, and the classes come "
                                    "from the mean of their probabilities; give one of the two");
      }
      auto [model, pre] = load_for_inference(f->weights, f->options.precision());
      const auto logits = classify_logits(model, f->images, pre, f->options);
      say_precision(*model, f->options.precision());  // once the images are read: an error stays one line
      auto classified = top_classes(probabilities_of(logits), f->images, pre.classes, f->top);
      for (size_t i = 0; i < classified.size(); ++i) {
        auto& c = classified[i];
        if (f->logits) {
          const auto row = logits[static_cast<int64_t>(i)].to(torch::kDouble).contiguous();
          c.logits.assign(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
        }
        std::cout << (f->json ? c.to_json() + "\n" : c.to_text()) << std::flush;
      }
    });
  }
}

}  // namespace alexnet::app
