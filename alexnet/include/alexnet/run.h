#pragma once

// A training run: one folder that the library owns. What `alexnet train` does, for
// any C++ program:
//
//   auto config = alexnet::RunConfig().data("train/").val("val/").arch("paper");
//   config.train().epochs(90);
//   alexnet::Run::prepare("runs/a", config, /*overwrite=*/false);
//   alexnet::Run run("runs/a", config, /*resume=*/false);
//   run.fit();                                    // last.pt, best.pt, metrics.jsonl
//
//   // later, maybe after Ctrl-C: continue exactly where it stopped, with more epochs
//   alexnet::RunConfig more;
//   more.train().epochs(120);
//   alexnet::Run again("runs/a", alexnet::Run::resume_config("runs/a", more, {"epochs"}), true);
//   again.fit();
//
// The folder holds last.pt (weights, momentum, schedule, generators, and this
// configuration), best.pt (what inference reads), metrics.jsonl, stats.pt (unless the
// configuration names a statistics file) and options.txt (the configuration as text,
// for people). Whatever an app adds (a log) is its own.

#include <alexnet/error.h>
#include <alexnet/model.h>
#include <alexnet/train.h>

#include <c10/core/Device.h>
#include <c10/util/Optional.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace alexnet {

class ProcessGroup;

/// Run::prepare: the folder exists and holds something.
class RunExists : public std::runtime_error {
 public:
  explicit RunExists(const std::string& dir)
      : std::runtime_error("run '" + dir + "' exists: resume it, or overwrite it to replace it"), dir_(dir) {}
  const std::string& dir() const noexcept { return dir_; }

 private:
  std::string dir_;
};

/// Run::resume_config: a setting changed at a resume would make the run differ from
/// an uninterrupted one (allow_changes accepts it).
class ChangeRefused : public OptionError {
 public:
  using OptionError::OptionError;
};

/// Everything that makes a run: its data, its network and how it trains. Settings have
/// names (those of the setters, as `to_json` writes them), by which a resume changes them.
struct RunConfig {
  RunConfig() = default;
  /// Training data: an image folder, a list file or a packed set.
  TORCH_ARG(std::string, data) = "";
  /// Validation data, evaluated after every epoch; empty: none.
  TORCH_ARG(std::string, val) = "";
  /// A statistics file (alexnet stats); empty: computed into RUN/stats.pt.
  TORCH_ARG(std::string, stats) = "";
  /// The network's preset: paper, caffe or torchvision (`preset`).
  TORCH_ARG(std::string, arch) = "paper";
  /// Side of the crops the network sees; 0: the preset's (227, or 224 for torchvision's).
  TORCH_ARG(int64_t, input_size) = 0;
  /// How weights and biases start; none: the preset's.
  TORCH_ARG(c10::optional<Init>, init) = c10::nullopt;
  /// Dropout on fc6 and fc7 (Section 4.2).
  TORCH_ARG(double, dropout) = 0.5;
  /// One device for both towers, or one per tower.
  TORCH_ARG(std::vector<c10::Device>, devices) = {c10::Device(c10::kCPU)};
  /// How the two towers run.
  TORCH_ARG(Execution, execution) = Execution::kGrouped;
  /// The training itself (Section 5).
  TORCH_ARG(TrainOptions, train) = {};

 public:
  /// The network's options, for `classes` outputs. Throws naming a bad setting.
  AlexNetOptions model(int64_t classes) const;
  /// Every setting, by name, in one JSON object.
  std::string to_json() const;
  /// Parses what to_json wrote; throws naming the setting that is wrong.
  static RunConfig from_json(const std::string& text);
  /// One setting as text ("" for none), as to_json holds it; throws for an unknown name.
  std::string get(const std::string& name) const;
  /// Sets one setting from text; throws OptionError naming it when the text does not fit.
  void set(const std::string& name, const std::string& text);
  /// What a setting is: its name, one line saying what it does (help texts take it),
  /// its choices (empty: any value of its kind), and whether it is a switch (true/false).
  struct Setting {
    std::string name;
    std::string help;
    std::vector<std::string> choices;
    bool is_switch = false;
  };
  /// Every setting, in to_json's order.
  static const std::vector<Setting>& settings();
};

class Run {
 public:
  /// Checks every setting of `config` that needs no reading of the data (throws
  /// OptionError naming the first that is wrong), then makes `dir` ready for a new run
  /// with it. An existing folder that is not empty is refused (RunExists) unless
  /// `overwrite`, which removes it. Under data parallelism rank 0 calls this before the
  /// others join, so that nobody reads a folder being removed.
  static void prepare(const std::string& dir, const RunConfig& config, bool overwrite);
  /// The checks `prepare` makes; the constructor makes them too.
  static void check(const RunConfig& config);

  /// The configuration to continue the run in `dir` with: the one its last checkpoint
  /// holds (for runs written before checkpoints held it, its options.txt), with the
  /// settings named in `given_names` taken from `given`. A change that makes the run
  /// differ from an uninterrupted one (any setting but epochs, workers, devices,
  /// execution and on_error) throws OptionError naming the setting, unless
  /// `allow_changes`. `changes` receives one line per setting changed ("epochs 1 -> 3").
  static RunConfig resume_config(const std::string& dir, const RunConfig& given,
                                 const std::vector<std::string>& given_names, bool allow_changes = false,
                                 std::vector<std::string>* changes = nullptr);

  /// Opens the run in `dir`: a new one (`resume` false; the folder made by `prepare`),
  /// or the one to continue (from last.pt, with `config` from `resume_config`, which
  /// is written back at once when it changed). Checks every setting before any slow
  /// work; then opens the data, loads or computes the statistics, builds the network
  /// (seeded by the configuration's seed) and its trainer. With a `group` (which must
  /// outlive the run) this process is one replica; rank 0 alone writes. `hooks.on_info`
  /// hears what it does.
  Run(std::string dir, RunConfig config, bool resume, ProcessGroup* group = nullptr, TrainHooks hooks = {});
  ~Run();
  Run(Run&&) noexcept;
  Run& operator=(Run&&) noexcept;

  /// Trains to the configuration's epochs (Trainer::fit) with the hooks given above.
  Trainer::Outcome fit();

  const std::string& dir() const;
  const RunConfig& config() const;
  Trainer& trainer();
  /// RUN/last.pt and RUN/best.pt.
  std::string last() const;
  std::string best() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet
