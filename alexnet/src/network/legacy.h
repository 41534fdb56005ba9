#pragma once

// Internal: the one reader of checkpoints in the first format ("alexnet-checkpoint-1"),
// which spoke four dialects: model options and preprocessing as "key=value" lines,
// class names as lines, mean and std as tensors of their own, the training state as
// nine numbers (a tensor, later JSON) beside a JSON-lines history. Such a checkpoint
// is read as if it had been written today: the rest of the library knows one format.
// tests/fixtures/checkpoint-format1.pt.gz is one, written by that version.

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/model.h>

#include <string>

namespace alexnet::detail {

constexpr const char* kFormat1 = "alexnet-checkpoint-1";

/// The first format's model options ("key=value" lines). Throws std::invalid_argument
/// naming the line or option that is malformed, unknown or missing.
AlexNetOptions format1_options(const std::string& text);

/// The first format's extras rewritten as today's: "preprocessing" as
/// Preprocessing::to_json (from "classes", "preprocessing", "mean_rgb", "std_rgb"),
/// "trainer" as Trainer::state writes it and "run/progress" as the run does (from
/// "train/progress" or "train/state", "train/scaler", "train/history"). Throws
/// std::invalid_argument naming what is malformed.
void upgrade_format1(CheckpointExtras& extras);

}  // namespace alexnet::detail
