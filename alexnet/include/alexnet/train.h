#pragma once

// Training (Section 5 of the paper): one step, and epochs over the data pipeline.
//
//   alexnet::Trainer trainer(model, alexnet::TrainOptions().lr(0.01));
//   auto result = trainer.step(images, labels);   // images: Preprocessing::apply's output
//
// A whole run (its folder, configuration, statistics and resuming) is <alexnet/run.h>.
//
// The update is the paper's, written out rather than LibTorch's `optim::SGD`:
//
//   v <- momentum * v - weight_decay * lr * w - lr * grad;   w <- w + v
//
// LibTorch's SGD keeps v' = momentum * v' + grad + weight_decay * w and steps
// w <- w - lr * v'. With a constant learning rate the two are the same (v = -lr v');
// when the rate drops they differ: the paper's momentum keeps the steps already
// taken at the old rate, LibTorch's rescales them at once (tests/test_train.cpp shows
// both). Momentum buffers are kept by parameter name, so a checkpoint restores them
// exactly.

#include <alexnet/checkpoint.h>
#include <alexnet/data/dataset.h>
#include <alexnet/model.h>
#include <alexnet/names.h>
#include <alexnet/precision.h>
#include <alexnet/preprocessing.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
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

struct TrainOptions {
  TrainOptions() = default;
  /// Passes over the training set (Section 5: about 90).
  TORCH_ARG(int64_t, epochs) = 90;
  /// Examples per step (Section 5: 128); per process under data parallelism.
  TORCH_ARG(int64_t, batch_size) = 128;
  /// Learning rate (Section 5: 0.01).
  TORCH_ARG(double, lr) = 0.01;
  /// Momentum (Section 5: 0.9).
  TORCH_ARG(double, momentum) = 0.9;
  /// Weight decay (Section 5: 0.0005), multiplied by the learning rate in the update.
  TORCH_ARG(double, weight_decay) = 5e-4;
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
  /// Validate with ten crops instead of the centre crop (Section 4.1).
  TORCH_ARG(bool, ten_crop) = false;
  /// Unreadable images: stop (kFail) or leave them out and count them.
  TORCH_ARG(data::OnError, on_error) = data::OnError::kFail;
  /// fp32, or autocast to bf16 (CPU or CUDA) or fp16 with dynamic loss scaling (CUDA).
  /// bf16 on a CPU runs channels-last whatever `channels_last` says; cpu_bf16() tells
  /// whether this CPU multiplies in bf16 (then faster than fp32) or emulates it.
  TORCH_ARG(Precision, precision) = Precision::kFp32;
  /// Convolution weights and inputs in channels-last (NHWC) layout, faster on GPUs
  /// (and always taken for bf16 on CPUs).
  TORCH_ARG(bool, channels_last) = false;
  /// What is subtracted from the pixels; none: the mean image for two-tower networks
  /// (Section 2, as Caffe), channel means for torchvision's.
  TORCH_ARG(c10::optional<Mean>, mean) = c10::nullopt;
  /// TensorFloat-32 on CUDA (set_tf32); off: full float32, as the paper.
  TORCH_ARG(bool, tf32) = false;
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

/// Reads metrics.jsonl as the trainer writes it; throws naming the file and line.
std::vector<EpochMetrics> read_metrics(const std::string& path);

/// What a run reports, and how it is stopped.
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

class Trainer {
 public:
  /// Stepping alone (a benchmark, a loop of your own): no data. Throws OptionError
  /// naming an option out of range.
  Trainer(AlexNet model, TrainOptions options);
  /// With data, for `fit` (this and `fit` are in alexnet::train): `val` may be null (no
  /// validation: the plateau policy then never divides); its classes are matched to
  /// the training data's by name (`data::match_classes`). `stats` gives the mean
  /// (image or channels, `options.mean`) and the PCA colour noise. Throws naming the
  /// data or the option that does not fit.
  Trainer(AlexNet model, std::shared_ptr<data::Source> train, std::shared_ptr<data::Source> val,
          data::Statistics stats, TrainOptions options);
  ~Trainer();
  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;

  /// Data parallelism: this trainer becomes one replica of `group` (which must outlive
  /// it). Every replica takes rank 0's weights now; from then on `step` averages the
  /// gradients over the replicas while the backward pass runs, and `fit` reads this
  /// rank's shard of every epoch and validates on its shard, all ranks summing.
  void distribute(ProcessGroup& group);

  struct StepResult {
    double loss = 0;        ///< this replica's mean cross-entropy (NaN or infinite when it overflowed)
    int64_t correct = 0;    ///< top-1 hits in the batch
    bool updated = false;   ///< false when the loss scaler skipped the step (float16 overflow)
    bool stop = false;      ///< some replica asked to stop (see `step`'s `stop_requested`)
    std::string warning;    ///< a warning to show once (a flat loss), else empty
  };
  /// One step of Section 5 on a batch: the forward pass under autocast (`precision`),
  /// cross-entropy, backward, the gradients averaged over the replicas (after
  /// `distribute`), loss scaling (fp16: an overflowing step is skipped on every replica
  /// and the scale halves), and the paper's update. `images` float [B, 3, S, S] as
  /// `Preprocessing::apply` makes them, `labels` int64 [B], on the model's first
  /// device. `stop_requested`: this process wants to stop; every replica learns it in
  /// the result. Counts the step in the epoch in progress. Throws std::runtime_error
  /// when the loss is not finite (fp32, bf16; on every replica at once) or fp16 steps
  /// keep overflowing.
  StepResult step(const torch::Tensor& images, const torch::Tensor& labels, bool stop_requested = false);

  enum class Outcome { kFinished, kStopped };
  /// Trains until `options.epochs`. In `run_dir` (made if missing; rank 0 only writes):
  /// `last.pt` after every epoch and when stopped (everything needed to resume),
  /// `best.pt` at each best validation error, or after every epoch without validation
  /// data (weights and preprocessing only: what inference reads), one `metrics.jsonl`
  /// line per epoch.
  Outcome fit(const std::string& run_dir, const TrainHooks& hooks = {});

  /// Continues from a checkpoint `fit` wrote: weights, momentum, schedule, epoch and
  /// step, random generators. Throws naming the file if it does not match the model.
  /// `extras`, when given, receives the checkpoint's extras from the same read.
  void restore(const std::string& checkpoint, CheckpointExtras* extras = nullptr);
  /// Everything needed to resume (last.pt).
  void save(const std::string& path) const;
  /// What inference needs: weights, options, preprocessing; no optimizer state (best.pt).
  void save_for_inference(const std::string& path) const;
  /// Entries written into every `save` besides the trainer's own (a run's configuration).
  CheckpointExtras& checkpoint_extras();

  int64_t epochs_done() const;
  /// The learning rate the next step uses (the schedule sets it after each epoch of `fit`).
  double lr() const;
  /// Sets it, for a schedule of one's own between steps. Throws OptionError unless positive.
  void set_lr(double lr);
  const std::vector<EpochMetrics>& history() const;
  AlexNet& model();
  const TrainOptions& options() const;
  /// How the trainer turns batches into the network's input (empty classes without data).
  const Preprocessing& preprocessing() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string to_string(LrPolicy policy);
LrPolicy lr_policy_from_string(const std::string& name);

}  // namespace alexnet
