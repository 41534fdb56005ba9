#pragma once

// Training and evaluation (Section 5 of the paper) over the data pipeline.
//
// The update is the paper's, written out rather than LibTorch's `optim::SGD`:
//
//   v <- momentum * v - weight_decay * lr * w - lr * grad;   w <- w + v
//
// LibTorch's SGD keeps v' = momentum * v' + grad + weight_decay * w and steps
// w <- w - lr * v'. With a constant learning rate the two are the same (v = -lr v');
// when the rate drops they differ: the paper's momentum keeps the steps already
// taken at the old rate, LibTorch's rescales them at once. Momentum buffers are kept
// by parameter name, so a checkpoint restores them exactly.

#include <alexnet/checkpoint.h>
#include <alexnet/data.h>
#include <alexnet/model.h>
#include <alexnet/precision.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace alexnet {

/// How the learning rate falls.
enum class LrPolicy {
  kPlateau,  ///< divided by 10 when the validation error has not improved for `patience` epochs (the paper)
  kStep,     ///< multiplied by `lr_factor` every `step_epochs` epochs (Caffe's)
  kFixed,
};

struct TrainOptions {
  TrainOptions() = default;
  TORCH_ARG(int64_t, epochs) = 90;
  /// Examples per step (Section 5: 128); per process under data parallelism.
  TORCH_ARG(int64_t, batch_size) = 128;
  TORCH_ARG(double, lr) = 0.01;
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(double, weight_decay) = 5e-4;
  TORCH_ARG(LrPolicy, lr_policy) = LrPolicy::kPlateau;
  /// Epochs without a better validation error before the plateau policy divides.
  TORCH_ARG(int64_t, patience) = 1;
  TORCH_ARG(int64_t, step_epochs) = 30;
  TORCH_ARG(double, lr_factor) = 0.1;
  /// Data loading threads.
  TORCH_ARG(int64_t, workers) = 2;
  /// Seeds the data order, the augmentation and (through LibTorch's generator) dropout.
  TORCH_ARG(uint64_t, seed) = 1;
  /// Side images are brought to before cropping (Section 2: 256); the crop is the model's input size.
  TORCH_ARG(int64_t, resize) = 256;
  /// PCA colour noise (Section 4.1(b)); 0 turns it off.
  TORCH_ARG(double, pca_std) = 0.1;
  /// Validate with ten crops instead of the centre crop (Section 4.1).
  TORCH_ARG(bool, ten_crop) = false;
  TORCH_ARG(data::OnError, on_error) = data::OnError::kFail;
  /// fp32, or autocast to bf16 (CPU or CUDA) or fp16 with dynamic loss scaling (CUDA).
  TORCH_ARG(Precision, precision) = Precision::kFp32;
  /// Convolution weights and inputs in channels-last (NHWC) layout, faster on GPUs.
  TORCH_ARG(bool, channels_last) = false;
};

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
};

/// Hooks for the app (progress, signals) and for data parallelism.
struct TrainHooks {
  /// After each step: epoch (1-based), step, steps in the epoch, the step's loss, images/s so far.
  std::function<void(int64_t, int64_t, int64_t, double, double)> on_step;
  std::function<void(const EpochMetrics&)> on_epoch;
  /// Warnings worth a user's attention (a loss stuck at ln(classes), ...).
  std::function<void(const std::string&)> on_warning;
  /// Set (from a signal handler, say) to stop after the current step with a checkpoint.
  const std::atomic<bool>* stop = nullptr;
  /// Every gradient passes here before the update: where an all-reduce goes.
  std::function<void(std::vector<torch::Tensor>& gradients)> reduce_gradients;
  /// Whether this process writes the run directory (only one should).
  bool writer = true;
  /// Data parallelism: this process reads shard `rank` of `world` of every epoch and
  /// validates its shard of the validation set; dropout draws from a generator seeded
  /// by (seed, rank, epoch, step), so that ranks differ and resuming is exact.
  size_t rank = 0, world = 1;
  /// Sums a CPU tensor over the processes in place (an all-reduce). With world > 1 the
  /// epoch's training and validation counts and, every step, the stop flag pass here.
  std::function<void(const torch::Tensor&)> sum;
};

/// What inference needs from the data set, carried in every checkpoint the trainer
/// writes, so that classifying an image does not need the data set.
struct Preprocessing {
  std::vector<std::string> classes;
  torch::Tensor mean_rgb;  ///< float64 [3], 0..255
  int64_t resize = 256;
  int64_t crop = 227;
  torch::Tensor std_rgb;  ///< float64 [3], 0..255; undefined: pixels are not divided (the paper)

  /// torchvision's ImageNet pipeline: shorter side 256, centre 224, pixels scaled to
  /// 0..1 and normalised by mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
  static Preprocessing torchvision(std::vector<std::string> classes);

  /// A batch as the network takes it, on `device`: float, mean subtracted (and
  /// divided by the std when there is one), colour noise added.
  torch::Tensor apply(const data::Batch& batch, const c10::Device& device) const;

  void add_to(CheckpointExtras& extras) const;
  /// From a checkpoint's extras; throws naming `path` when they are missing.
  static Preprocessing from(const CheckpointExtras& extras, const std::string& path);
};

/// Converts torchvision's weights (a file `torch.save` wrote; see <alexnet/pytorch.h>)
/// into a checkpoint at `checkpoint` carrying torchvision's preprocessing and `classes`
/// (one name per output; empty: named by index). Throws naming the file, or the class
/// count, before anything is written.
AlexNet convert_torchvision(const std::string& weights, const std::string& checkpoint,
                            std::vector<std::string> classes = {});

/// A checkpoint's model and preprocessing, from one read of the file: what
/// evaluate, classify and features need.
std::pair<AlexNet, Preprocessing> load_for_inference(const std::string& path);

class Trainer {
 public:
  /// `val` may be null (no validation: the plateau policy then never divides).
  Trainer(AlexNet model, std::shared_ptr<data::Source> train, std::shared_ptr<data::Source> val,
          data::Statistics stats, TrainOptions options);

  enum class Outcome { kFinished, kStopped };
  /// Trains until `options.epochs`. In `run_dir`: `last.pt` after every epoch (and
  /// when stopped), `best.pt` at each best validation error, one `metrics.jsonl`
  /// line per epoch. Throws on a NaN or infinite loss, naming the epoch and step.
  Outcome fit(const std::string& run_dir, const TrainHooks& hooks = {});

  /// Continues from a checkpoint `fit` wrote: weights, momentum, schedule, epoch and
  /// step, random generators. Throws naming the file if it does not match the model.
  void restore(const std::string& checkpoint);
  void save(const std::string& path) const;

  int64_t epochs_done() const { return epoch_; }
  double lr() const { return lr_; }
  const std::vector<EpochMetrics>& history() const { return history_; }
  AlexNet& model() { return model_; }

 private:
  void step_update();
  void end_epoch(EpochMetrics& metrics);

  AlexNet model_;
  std::shared_ptr<data::Source> train_, val_;
  data::Statistics stats_;
  TrainOptions options_;
  std::map<std::string, torch::Tensor> momentum_;
  LossScaler scaler_;
  double lr_;
  int64_t epoch_ = 0;      // completed epochs
  int64_t step_ = 0;       // steps done in the epoch in progress
  double best_error_ = 2;  // best validation top-1 error so far
  int64_t bad_epochs_ = 0;
  // Running sums of the epoch in progress, kept across a stop and resume.
  double loss_sum_ = 0, correct_ = 0, seen_ = 0, seconds_ = 0;
  std::vector<EpochMetrics> history_;
};

struct Evaluation {
  int64_t images = 0;
  double loss = 0, top1 = 0, top5 = 0;  ///< mean cross-entropy; accuracies in [0, 1]
  std::vector<double> per_class;         ///< top-1 accuracy per class (NaN where a class has no images)
  std::vector<int64_t> per_class_images;
  int64_t skipped = 0;

  std::string to_json(const std::vector<std::string>& classes) const;
};

/// Runs `model` (in eval mode, without gradients) over every image of `source` in
/// order, centre-cropped (or ten-cropped) as `pre` says, and calls `visit` with each
/// batch and the activations of `layer` for it (on the model's device). Returns how
/// many images were left out as unreadable (OnError::kSkip).
int64_t for_each_output(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                     Layer layer, bool ten_crop, int64_t batch_size, int64_t workers, data::OnError on_error,
                     const std::function<void(const data::Batch&, const torch::Tensor&)>& visit);

/// Top-1, top-5, loss and per-class accuracy over `source`: the centre crop, or the
/// average of the ten crops' softmax outputs (Section 4.1).
Evaluation evaluate(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                    bool ten_crop = false, int64_t batch_size = 128, int64_t workers = 2,
                    data::OnError on_error = data::OnError::kFail);

/// `evaluate` split over `world` processes: this one reads images rank, rank + world,
/// ... and `sum` (an all-reduce) adds the counts, so every process returns the figures
/// of the whole set, as one process would.
Evaluation evaluate_shard(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                          size_t rank, size_t world, const std::function<void(const torch::Tensor&)>& sum,
                          bool ten_crop = false, int64_t batch_size = 128, int64_t workers = 2,
                          data::OnError on_error = data::OnError::kFail);

/// Softmax probabilities [N, classes] for image files, preprocessed as `pre` says.
torch::Tensor classify(AlexNet& model, const std::vector<std::string>& images, const Preprocessing& pre,
                       bool ten_crop = false);

/// `text` escaped for the inside of a JSON string (quotes, backslashes, control characters).
std::string json_escape(const std::string& text);

std::string to_string(LrPolicy policy);
LrPolicy lr_policy_from_string(const std::string& name);

}  // namespace alexnet
