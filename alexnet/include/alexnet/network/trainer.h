#pragma once

// One training step of Section 5 on tensors, and the state that carries it from step
// to step: momentum, learning rate, loss scale, random generators and counters. The
// trainer knows batches, not data sets, as `torch::optim::SGD` knows no DataLoader:
// the epoch loop over a data set is the run's (<alexnet/train/run.h>, in
// alexnet::train), and a loop of one's own is a few lines:
//
//   alexnet::Trainer trainer(model, alexnet::TrainerOptions().lr(0.01));
//   for (auto& [images, labels] : my_batches) {         // images: Preprocessing::apply's output
//     auto result = trainer.step(images, labels);
//   }
//   trainer.next_epoch();
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

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/model.h>
#include <alexnet/network/precision.h>

#include <torch/arg.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace alexnet {

class ProcessGroup;

/// Learning-rate multipliers by layer ("fc8") or parameter ("fc8.bias").
using LrMultipliers = std::map<std::string, double>;

struct TrainerOptions {
  TrainerOptions() = default;
  /// Learning rate (Section 5: 0.01).
  TORCH_ARG(double, lr) = 0.01;
  /// Momentum (Section 5: 0.9).
  TORCH_ARG(double, momentum) = 0.9;
  /// Weight decay (Section 5: 0.0005), multiplied by the learning rate in the update.
  TORCH_ARG(double, weight_decay) = 5e-4;
  /// fp32, or autocast to bf16 (CPU or CUDA) or fp16 with dynamic loss scaling (CUDA).
  /// cpu_bf16() tells whether this CPU multiplies in bf16 (then faster than fp32) or
  /// emulates it.
  TORCH_ARG(Precision, precision) = Precision::kFp32;
  /// Convolution weights and inputs in channels-last (NHWC) layout, faster on GPUs
  /// (and always taken on CPUs: runs_channels_last).
  TORCH_ARG(bool, channels_last) = false;
  /// TensorFloat-32 on CUDA (set_tf32); off: full float32, as the paper.
  TORCH_ARG(bool, tf32) = false;
  /// Layers that do not train, by the paper's names (conv1 .. fc8; both towers): their
  /// parameters get no gradient, no update and no weight decay, and stay bitwise as
  /// they are; under data parallelism they are not all-reduced. Fine-tuning's feature
  /// extractor is conv1 .. conv5 (PyTorch's tutorial sets requires_grad false).
  TORCH_ARG(std::vector<std::string>, freeze) = {};
  /// Caffe's lr_mult: the learning rate of a layer ("fc8": weight and bias) or of one
  /// parameter ("fc8.bias") times this, and with it the weight decay the update carries:
  /// v <- momentum v - weight_decay lr k w - lr k grad. Caffe's fine-tuning example
  /// gives the new fc8 10.
  TORCH_ARG(LrMultipliers, lr_mult) = {};
};

/// The paper's learned layers in forward order: conv1 .. conv5, fc6 .. fc8.
const std::vector<std::string>& layer_names();

/// Throws OptionError naming the first option of `options` out of its range (a layer
/// that is not one of layer_names(), a multiplier that is negative, a layer both frozen
/// and multiplied).
void validate(const TrainerOptions& options);

class Trainer {
 public:
  /// Throws OptionError naming an option out of range (fp16 off CUDA among them).
  Trainer(AlexNet model, TrainerOptions options);
  ~Trainer();
  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;

  /// Data parallelism: this trainer becomes one replica of `group` (which must outlive
  /// it). Every replica takes rank 0's weights now; from then on `step` averages the
  /// gradients over the replicas while the backward pass runs.
  void distribute(ProcessGroup& group);
  /// The group of `distribute`, or nullptr.
  ProcessGroup* group() const;

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

  /// Counts the epoch in progress as done: the next step is step 0 of the next one.
  void next_epoch();
  /// Epochs counted done by next_epoch.
  int64_t epoch() const;
  /// Steps taken in the epoch in progress.
  int64_t steps_in_epoch() const;

  /// The learning rate the next step uses.
  double lr() const;
  /// Sets it (a schedule between steps). Throws OptionError unless positive.
  void set_lr(double lr);

  /// Everything the trainer holds besides the model's weights, as checkpoint entries
  /// (save it with the model: `alexnet::save(*trainer.model(), path, trainer.state())`):
  /// "trainer" (JSON {"epoch", "step", "lr", "loss_scale", "good_steps"}),
  /// "momentum/<parameter>", and the generators that dropout draws from, "rng/cpu" and
  /// "rng/cuda:N" for the GPUs the model is on. The momentum tensors are the trainer's
  /// own (no copy of a model's worth of buffers): save them before the next step.
  CheckpointExtras state() const;
  /// Takes back what `state` gave (from a checkpoint's extras: `load_weights` fills them
  /// with the weights); the weights are the caller's to load. Throws std::runtime_error
  /// naming `source` when the trainer's entry is missing or malformed.
  void restore(const CheckpointExtras& state, const std::string& source);

  /// Data parallelism: throws std::runtime_error when the replicas' weights differ
  /// (each rank's parameters' bit patterns summed, all-reduced and compared).
  void check_replicas() const;

  /// Whether the step runs the network channels-last: asked for, or on a CPU
  /// (runs_channels_last).
  bool channels_last() const;
  AlexNet& model();
  const TrainerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet
