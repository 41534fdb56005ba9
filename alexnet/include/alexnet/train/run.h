#pragma once

// A training run: one folder that the library owns, and the epoch loop over its data
// (Section 5). What `alexnet train` does, for any C++ program:
//
//   alexnet::RunConfig config;
//   config.data("train/").val("val/").arch("paper");
//   config.train().epochs(90);
//   config.trainer().precision(alexnet::Precision::kAuto);
//   alexnet::TrainHooks hooks;
//   hooks.on_epoch = [](const alexnet::EpochMetrics& m) { std::cout << m.to_text() << "\n"; };
//   auto run = alexnet::Run::create("runs/a", config, alexnet::RunOptions().hooks(hooks));
//   run.fit();                                    // last.pt, best.pt, metrics.jsonl
//
//   // later, maybe after Ctrl-C: continue exactly where it stopped, with more epochs
//   auto again = alexnet::Run::resume("runs/a", [](alexnet::RunConfig& c) { c.train().epochs(120); });
//   if (again.fit() == alexnet::Run::Outcome::kStopped) { /* stopped by hooks.stop: resume later */ }
//
// The folder holds last.pt (weights, momentum, schedule, generators, and this
// configuration), best.pt (what inference reads), metrics.jsonl, stats.pt (unless the
// configuration names a statistics file) and options.txt (the configuration as text,
// for people). Whatever an app adds (a log) is its own.

#include <alexnet/data/source.h>
#include <alexnet/network/error.h>
#include <alexnet/network/model.h>
#include <alexnet/network/names.h>
#include <alexnet/network/preprocessing.h>
#include <alexnet/network/trainer.h>

#include <c10/core/Device.h>
#include <c10/util/Optional.h>
#include <torch/arg.h>

#include <atomic>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace alexnet {

class ProcessGroup;

/// How the learning rate falls.
enum class LrPolicy {
  kPlateau,  ///< divided by 10 when the validation error has not improved for `patience` epochs (the paper)
  kStep,     ///< multiplied by `lr_factor` every `step_epochs` epochs (Caffe's)
  kFixed,
};

template <>
const std::vector<std::pair<std::string, LrPolicy>>& names<LrPolicy>();  ///< plateau, step, fixed

/// What a fine-tuned network's input is normalised with.
enum class Normalize {
  kWeights,  ///< the pretrained weights' own preprocessing (mean, std, sizes): the input they were trained on
  kData,     ///< the new data's statistics, as a run from scratch
};

template <>
const std::vector<std::pair<std::string, Normalize>>& names<Normalize>();  ///< weights, data

/// The epoch loop: how long, how the rate falls, and what the data pipeline does
/// (Sections 2, 4.1 and 5). The step itself is `TrainerOptions`.
struct TrainOptions {
  TrainOptions() = default;
  /// Passes over the training set (Section 5: about 90).
  TORCH_ARG(int64_t, epochs) = 90;
  /// Examples per step (Section 5: 128); per process under data parallelism.
  TORCH_ARG(int64_t, batch_size) = 128;
  /// How the learning rate falls (Section 5: by 10 when the validation error stops improving).
  TORCH_ARG(LrPolicy, lr_policy) = LrPolicy::kPlateau;
  /// Epochs without a better validation error before the plateau policy divides.
  TORCH_ARG(int64_t, patience) = 1;
  /// Epochs between falls under the step policy (Caffe's bvlc_alexnet: 100,000 steps).
  TORCH_ARG(int64_t, step_epochs) = 30;
  /// What the step policy multiplies the rate by.
  TORCH_ARG(double, lr_factor) = 0.1;
  /// Data loading threads; 0 loads in the calling thread (as PyTorch's DataLoader).
  TORCH_ARG(int64_t, workers) = 2;
  /// Seeds the initialisation, the data order, the augmentation and dropout.
  TORCH_ARG(uint64_t, seed) = 1;
  /// Side images are brought to before cropping (Section 2: 256); the crop is the model's input size.
  TORCH_ARG(int64_t, resize) = 256;
  /// PCA colour noise (Section 4.1(b): 0.1); 0 turns it off.
  TORCH_ARG(double, pca_std) = 0.1;
  /// Random crops of the resized images (Section 4.1(a)); false: the centre crop.
  TORCH_ARG(bool, random_crops) = true;
  /// Random horizontal reflections (Section 4.1(a)).
  TORCH_ARG(bool, flips) = true;
  /// Validate with ten crops instead of the centre crop (Section 4.1).
  TORCH_ARG(bool, ten_crop) = false;
  /// Unreadable images: stop (kFail) or leave them out and count them.
  TORCH_ARG(data::OnError, on_error) = data::OnError::kFail;
  /// What is subtracted from the pixels; none: the mean image for two-tower networks
  /// (Section 2, as Caffe), channel means for torchvision's.
  TORCH_ARG(c10::optional<Mean>, mean) = c10::nullopt;
  /// Fine-tuning (RunConfig::weights): normalise as the weights were trained (their
  /// mean, std, resize and crop; `resize` and `mean` then follow them) or with the new
  /// data's statistics.
  TORCH_ARG(Normalize, normalize) = Normalize::kWeights;
};

/// Throws OptionError naming the first option of `options` out of its range.
void validate(const TrainOptions& options);

/// One epoch's figures, as `metrics.jsonl` holds them.
struct EpochMetrics {
  int64_t epoch = 0;  ///< 1-based
  double train_loss = 0, train_top1 = 0;
  double val_loss = 0, val_top1 = 0, val_top5 = 0;  ///< accuracies in [0, 1]; NaN without validation data
  double lr = 0;
  double images_per_second = 0;
  double seconds = 0;

  std::string to_json() const;
  /// Parses one line as to_json writes it; throws on a line that is not one.
  static EpochMetrics from_json(const std::string& line);
  /// One line for people: "epoch 3: train loss 0.4554 top-1 83.17% | val loss ... | lr 0.01 | 505 images/s, 119 s".
  std::string to_text() const;
};

/// Reads metrics.jsonl as a run writes it; throws naming the file and line.
std::vector<EpochMetrics> read_metrics(const std::string& path);

/// What a run reports, and how it is stopped. Under data parallelism rank 0 alone
/// reports steps, epochs and information (it speaks for the run); every rank warns.
struct TrainHooks {
  /// After each step: epoch (1-based), step, steps in the epoch, the step's loss, images/s so far.
  std::function<void(int64_t, int64_t, int64_t, double, double)> on_step;
  std::function<void(const EpochMetrics&)> on_epoch;
  /// Warnings worth a user's attention (a loss stuck at ln(classes), ...).
  std::function<void(const std::string&)> on_warning;
  /// What the run is doing (statistics computed, resumed, data parallel, ...).
  std::function<void(const std::string&)> on_info;
  /// Set (from a signal handler, say) to stop after the current step with a checkpoint.
  /// Under data parallelism every rank stops at the same step.
  const std::atomic<bool>* stop = nullptr;
};

/// Run::create: the folder exists and holds something.
class RunExists : public std::runtime_error {
 public:
  explicit RunExists(const std::string& dir)
      : std::runtime_error("run '" + dir + "' exists: resume it, or overwrite it to replace it"), dir_(dir) {}
  const std::string& dir() const noexcept { return dir_; }

 private:
  std::string dir_;
};

/// Run::resume: a setting changed at a resume would make the run differ from an
/// uninterrupted one (RunOptions::allow_changes accepts it).
class ChangeRefused : public OptionError {
 public:
  using OptionError::OptionError;
};

/// Everything that makes a run: its data, its network and how it trains. Settings have
/// names (those of the setters, as `to_json` writes them), by which the command line
/// sets them and a resume reports what changed.
struct RunConfig {
  RunConfig() = default;
  /// Training data: an image folder, a list file or a packed set.
  TORCH_ARG(std::string, data) = "";
  /// Validation data, evaluated after every epoch; empty: none.
  TORCH_ARG(std::string, val) = "";
  /// A statistics file (alexnet stats); empty: computed into RUN/stats.pt.
  TORCH_ARG(std::string, stats) = "";
  /// Fine-tuning: a checkpoint to start from (a run's best.pt or last.pt, a converted
  /// torchvision or Caffe model: what `classify` reads). The network's options come
  /// from it (all but the classes, dropout, devices and execution; `input_size` when
  /// given); every layer is loaded bit for bit, and fc8's rows by class name: a class
  /// it knows keeps its row, a new one gets a fresh row (the preset's initialisation).
  /// Empty: train from scratch.
  TORCH_ARG(std::string, weights) = "";
  /// The network's preset: paper, caffe or torchvision (`preset`).
  TORCH_ARG(std::string, arch) = "paper";
  /// Side of the crops the network sees; 0: the preset's (227, or 224 for torchvision's).
  TORCH_ARG(int64_t, input_size) = 0;
  /// How weights and biases start; none: the preset's.
  TORCH_ARG(c10::optional<Init>, init) = c10::nullopt;
  /// Dropout on fc6 and fc7 (Section 4.2).
  TORCH_ARG(double, dropout) = 0.5;
  /// The paper's choices and the alternatives it measured them against (Sections
  /// 3.1-3.4), for the paper and caffe presets: the non-linearity, ...
  TORCH_ARG(Activation, activation) = Activation::kReLU;
  /// ... two towers or one with half the kernels (Architecture::kOneTower), ...
  TORCH_ARG(int64_t, towers) = 2;
  /// ... LRN after conv1 and conv2 (the preset's) or none, ...
  TORCH_ARG(bool, lrn) = true;
  /// ... and the pooling window z and stride s (3 and 2: overlapping).
  TORCH_ARG(int64_t, pool_size) = 3;
  TORCH_ARG(int64_t, pool_stride) = 2;
  /// One device for both towers, or one per tower.
  TORCH_ARG(std::vector<c10::Device>, devices) = {c10::Device(c10::kCPU)};
  /// How the two towers run.
  TORCH_ARG(Execution, execution) = Execution::kGrouped;
  /// The epoch loop and the data pipeline (Sections 2, 4.1, 5).
  TORCH_ARG(TrainOptions, train) = {};
  /// The step: learning rate, momentum, weight decay, precision (Section 5).
  TORCH_ARG(TrainerOptions, trainer) = {};

 public:
  /// The network's options from the preset, for `classes` outputs (fine-tuning takes
  /// the weights' instead). Throws naming a bad setting.
  AlexNetOptions model(int64_t classes) const;
  /// Every setting, by name, in one JSON object.
  std::string to_json() const;
  /// Parses what to_json wrote (a setting missing takes its default); throws naming
  /// the setting that is wrong.
  static RunConfig from_json(const std::string& text);
  /// One setting as text ("" for none), as options.txt shows it; throws for an unknown name.
  std::string get(const std::string& name) const;
  /// Sets one setting from text; throws OptionError naming it when the text does not fit.
  void set(const std::string& name, const std::string& text);
  /// What a setting is: its name, one line saying what it does (help texts take it),
  /// its choices (empty: any value of its kind), its kind, and whether a resume may
  /// change it without making the run differ from an uninterrupted one.
  struct Setting {
    enum class Kind { kText, kWhole, kReal, kSwitch };
    std::string name;
    std::string help;
    std::vector<std::string> choices;
    Kind kind = Kind::kText;
    bool safe_to_change = false;
  };
  /// Every setting, in to_json's order.
  static const std::vector<Setting>& settings();
};

/// How a run is opened (not part of its configuration).
struct RunOptions {
  RunOptions() = default;
  /// Run::create: replace a folder that holds something. The old run is kept aside
  /// until the new one has started, and put back if it fails to.
  TORCH_ARG(bool, overwrite) = false;
  /// Run::resume: accept changes that make the run differ from an uninterrupted one.
  TORCH_ARG(bool, allow_changes) = false;
  /// What the run reports, and its stop flag.
  TORCH_ARG(TrainHooks, hooks) = {};

 public:
  /// Data parallelism: this process is one replica of `group` (which must outlive the
  /// run); rank 0 alone writes the folder. nullptr (the default): alone.
  RunOptions& group(ProcessGroup* group) {
    group_ = group;
    return *this;
  }
  ProcessGroup* group() const { return group_; }

 private:
  ProcessGroup* group_ = nullptr;
};

class Run {
 public:
  /// Starts a new run in `dir` with `config`: every setting that needs no reading of
  /// the data is checked first (OptionError naming the first that is wrong, before
  /// anything is made); `precision` auto is resolved; the folder is made (RunExists if
  /// it holds something, unless `overwrite`); then the data is opened, its statistics
  /// loaded or computed, and the network built (seeded by the configuration's seed).
  /// If any of that fails, the folder is left as it was before the call. The folder is
  /// this process's (an advisory lock on RUN/.lock) from here until `fit` returns:
  /// another process's create, overwrite or resume of it throws naming this pid.
  static Run create(const std::string& dir, RunConfig config, RunOptions options = {});

  /// A change to a run's configuration at a resume.
  using Edit = std::function<void(RunConfig&)>;
  /// Continues the run in `dir` from its last.pt: its configuration (for runs written
  /// before checkpoints held it, its options.txt) with `edit` applied. Settings that
  /// `edit` changes are compared with the stored ones: a change that would make the
  /// run differ from an uninterrupted one (any but epochs, workers, devices, execution
  /// and on_error) throws ChangeRefused naming the setting, unless `allow_changes`;
  /// accepted changes are written back to last.pt at once and listed by `changes()`.
  static Run resume(const std::string& dir, const Edit& edit = {}, RunOptions options = {});

  /// The configuration the run in `dir` was last written with (its last.pt's, or for
  /// runs written before checkpoints held it, its options.txt). Throws naming the
  /// folder when there is no last.pt.
  static RunConfig config_of(const std::string& dir);

  ~Run();
  Run(Run&&) noexcept;
  Run& operator=(Run&&) noexcept;

  enum class Outcome {
    kFinished,  ///< trained to the configuration's epochs
    kStopped,   ///< stopped by `hooks.stop`; last.pt holds where (resume it)
  };
  /// Trains to the configuration's epochs. In the run's folder (rank 0 only writes):
  /// `last.pt` after every epoch and when stopped (everything needed to resume),
  /// `best.pt` at each best validation error, or after every epoch without validation
  /// data (weights and preprocessing only: what inference reads), one `metrics.jsonl`
  /// line per epoch.
  Outcome fit();

  const std::string& dir() const;
  const RunConfig& config() const;
  /// Resume's accepted changes, a line each ("epochs 1 -> 3").
  const std::vector<std::string>& changes() const;
  Trainer& trainer();
  /// How the run turns batches into the network's input (what best.pt carries).
  const Preprocessing& preprocessing() const;
  /// Every finished epoch's figures.
  const std::vector<EpochMetrics>& history() const;
  /// RUN/last.pt and RUN/best.pt.
  std::string last() const;
  std::string best() const;

 private:
  struct Impl;
  explicit Run(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet
