#pragma once

// Internal: evaluation on a source whose labels are already the model's classes (the
// run matches its validation data once, when it opens it).

#include <alexnet/train/inference.h>

namespace alexnet::detail {

/// `evaluate` without matching the classes: `source`'s labels index `pre.classes`.
Evaluation evaluate_matched(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                            const InferenceOptions& options, ProcessGroup* group);

}  // namespace alexnet::detail
