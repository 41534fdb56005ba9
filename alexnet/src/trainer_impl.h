#pragma once

// Internal: the trainer's state, shared by train.cpp (the step, checkpoints; the
// network target) and fit.cpp (epochs over the data pipeline; alexnet::train).

#include <alexnet/distributed.h>
#include <alexnet/train.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace alexnet {

struct Trainer::Impl {
  AlexNet model;
  std::shared_ptr<data::Source> train, val;
  data::Statistics stats;
  TrainOptions options;
  Preprocessing pre;
  ProcessGroup* group = nullptr;
  CheckpointExtras extras;  // the run's entries
  std::map<std::string, torch::Tensor> momentum;
  LossScaler scaler;
  double lr;
  int64_t epoch = 0;      // completed epochs
  int64_t step = 0;       // steps done in the epoch in progress
  double best_error = 2;  // best validation top-1 error so far
  int64_t bad_epochs = 0;
  // Running sums of the epoch in progress, kept across a stop and resume.
  double loss_sum = 0, correct = 0, seen = 0, seconds = 0;
  std::vector<EpochMetrics> history;
  // Within a process's life only.
  int64_t flat_steps = 0, skipped_steps = 0;
  bool warned_flat = false;

  Impl(AlexNet m, TrainOptions o) : model(std::move(m)), options(std::move(o)), lr(options.lr()) {}

  bool parallel() const { return group && group->size() > 1; }
  bool writer() const { return !group || group->rank() == 0; }
  c10::Device device() const { return model->tower_devices().front(); }
  // Channels-last when asked for, and always for bf16 on the CPU: oneDNN's bf16
  // convolutions and the fused LRN and pooling then need no layout conversions.
  bool channels_last() const {
    return options.channels_last() || (options.precision() == Precision::kBf16 && device().is_cpu());
  }
  void update();
  void write(const std::string& path, bool inference_only) const;
  void check_replicas(const TrainHooks& hooks) const;
};

}  // namespace alexnet
