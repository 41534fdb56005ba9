#pragma once

// One file per model: its weights and the options that built it, so loading needs
// no architecture flags. Files are LibTorch archives (torch::serialize), written
// to a temporary file, flushed, synced and renamed into place: a crash never leaves
// a half-written checkpoint under the final name.
//
// Format "alexnet-checkpoint-2": "options" (AlexNetOptions::to_json), "tensors" (every
// parameter and buffer by name), and the extras: JSON records by name ("preprocessing",
// "trainer", "run/config", "run/progress") and tensors ("mean_image", "momentum/...",
// "rng/..."). Files in the first format are read as if written in this one.

#include <alexnet/network/model.h>

#include <c10/core/Device.h>

#include <map>
#include <string>
#include <vector>

namespace alexnet {

/// What a checkpoint carries beyond the model: the training state (momentum,
/// schedule, epoch, random generators) and what inference needs (class names,
/// preprocessing, input statistics), under names the writer chooses.
struct CheckpointExtras {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> strings;
};

/// Writes `model` (parameters, buffers, options) and `extras` to `path` atomically.
void save(const AlexNetImpl& model, const std::string& path, const CheckpointExtras& extras = {});

/// The extras stored in `path` (empty for a checkpoint written without).
CheckpointExtras read_extras(const std::string& path);

/// Builds the model a checkpoint describes and loads its weights. The towers go to
/// `devices` (one for both, or one per tower); two devices imply tower execution.
/// `extras`, when given, receives the checkpoint's extras from the same read.
AlexNet load(const std::string& path,
             const std::vector<c10::Device>& devices = {c10::Device(c10::kCPU)},
             CheckpointExtras* extras = nullptr);

/// Loads the weights in `path` into an existing model. Every name and shape is
/// checked before anything is copied: on error the model is unchanged, and the
/// message names the file and the first mismatching parameter. `extras`, when given,
/// receives the checkpoint's extras from the same read.
void load_weights(AlexNetImpl& model, const std::string& path, CheckpointExtras* extras = nullptr);

/// The options of the model stored in `path`.
AlexNetOptions read_options(const std::string& path);

/// Throws now what writing `path` would meet, before long work whose result could not
/// be kept (features, statistics, conversions): its folder missing or not a folder,
/// `path` a folder, no permission, a read-only or full file system. The message is
/// "WHAT 'PATH': cannot be written (REASON): nothing was done".
void check_writable(const std::string& path, const std::string& what = "file");

}  // namespace alexnet
