#pragma once

// Inference over the data pipeline: evaluation (top-1, top-5, loss, per class),
// classification of image files, and a layer's activations for retrieval (Section 6.1).
// Images are centre-cropped, or ten-cropped with the ten softmax outputs averaged
// (Section 4.1), and preprocessed as the checkpoint says (<alexnet/network/preprocessing.h>).
//
// Inference runs in float32 or, with `precision`, in bfloat16 (autocast, channels-last
// on CPUs); outputs are float32 either way. A model loaded in bf16 (load_for_inference's
// precision) keeps its weights in bf16 and runs without per-batch weight casts.
//
//   auto [model, pre] = alexnet::load_for_inference("run/best.pt", alexnet::Precision::kAuto);
//   auto result = alexnet::evaluate(model, alexnet::data::open_source("val/"), pre,
//                                   alexnet::InferenceOptions().ten_crop(true).precision(alexnet::Precision::kAuto));

#include <alexnet/data/source.h>
#include <alexnet/network/model.h>
#include <alexnet/network/precision.h>
#include <alexnet/network/preprocessing.h>

#include <torch/arg.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace alexnet {

class ProcessGroup;
namespace data {
struct Batch;
}

/// A flag that a signal handler sets to ask long work to stop.
using StopFlag = const std::atomic<bool>*;

struct InferenceOptions {
  InferenceOptions() = default;
  /// Average the softmax outputs of ten crops (Section 4.1) instead of the centre crop.
  TORCH_ARG(bool, ten_crop) = false;
  /// Images per forward pass (ten crops each with `ten_crop`).
  TORCH_ARG(int64_t, batch_size) = 128;
  /// Decoding threads; 0 decodes in the calling thread.
  TORCH_ARG(int64_t, workers) = 2;
  /// Unreadable images: stop, or leave them out and count them.
  TORCH_ARG(data::OnError, on_error) = data::OnError::kFail;
  /// Checked before each batch: once set (a signal handler's flag), the function
  /// throws alexnet::Stopped. nullptr: never.
  TORCH_ARG(StopFlag, stop) = nullptr;
  /// fp32; bf16 (bfloat16 products); fp16 (CUDA); auto (bf16 on
  /// CPUs that multiply in bf16, else fp32). A model whose weights are stored in bf16
  /// needs bf16 (or auto resolving to it).
  TORCH_ARG(Precision, precision) = Precision::kFp32;
};

/// Throws OptionError naming the first option of `options` out of its range.
void validate(const InferenceOptions& options);

/// The precision inference with `asked` runs at on `model`'s devices (kAuto resolved).
/// Throws OptionError when the model's weights are stored in another reduced type
/// (bf16 weights inferring in fp32, say).
Precision inference_precision(const AlexNetImpl& model, Precision asked);

struct Evaluation {
  int64_t images = 0;
  double loss = 0, top1 = 0, top5 = 0;  ///< mean cross-entropy; accuracies in [0, 1]
  std::vector<double> per_class;         ///< top-1 accuracy per class (NaN where a class has no images)
  std::vector<int64_t> per_class_images;
  int64_t skipped = 0;

  /// One JSON object: images, top1, top5, loss, skipped, per_class [{index, label, images, top1}].
  std::string to_json(const std::vector<std::string>& classes) const;
  /// For people: images, top-1, top-5 and loss, a line each, then each class's top-1.
  std::string to_text(const std::vector<std::string>& classes) const;
};

/// Runs `model` (in eval mode, without gradients) over every image of `source` in
/// order, as `pre` and `options` say, and calls `visit` with each batch and the
/// activations of `layer` for it (on the model's device; ten rows per image with
/// ten_crop; float32 whatever the precision). Returns how many images were left out as
/// unreadable.
int64_t for_each_output(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                        Layer layer, const InferenceOptions& options,
                        const std::function<void(const data::Batch&, const torch::Tensor&)>& visit);

/// Top-1, top-5, loss and per-class accuracy over `source`. With a `group` of more
/// than one process, each reads images rank, rank + world, ... and the counts are
/// summed: every process returns the figures of the whole set, as one process would.
/// Throws when no image could be read.
Evaluation evaluate(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                    const InferenceOptions& options = {}, ProcessGroup* group = nullptr);

/// Softmax probabilities [N, classes] (float32) for image files, preprocessed as `pre`
/// says, in one batch; `options` gives ten_crop (the mean of the ten crops'
/// probabilities, Section 4.1) and precision.
torch::Tensor classify(AlexNet& model, const std::vector<std::string>& images, const Preprocessing& pre,
                       const InferenceOptions& options = {});

/// The logits (fc8's outputs, before the softmax; float32) behind `classify`:
/// [N, classes] for the centre crops, [N, 10, classes] with ten_crop (the crops in
/// `data::Mode::kTenCrop`'s order).
torch::Tensor classify_logits(AlexNet& model, const std::vector<std::string>& images, const Preprocessing& pre,
                              const InferenceOptions& options = {});

/// `classify`'s probabilities from `classify_logits`' logits: the softmax [N, classes],
/// over ten crops [N, 10, classes] the mean of the ten softmaxes (Section 4.1).
torch::Tensor probabilities_of(const torch::Tensor& logits);

/// One image's most probable classes.
struct Classification {
  struct Class {
    std::string label;
    int64_t index = 0;
    double probability = 0;
  };
  std::string image;
  std::vector<Class> top;      ///< most probable first
  std::vector<double> logits;  ///< every class's logit in class order, when asked for (else empty)

  /// {"image": ..., "top": [{"label": ..., "index": ..., "probability": ...}]}, and
  /// "logits": [...] when there are logits.
  std::string to_json() const;
  /// For people: the image, then a line per class ("  99.10%  Ankle boot (9)"), then
  /// "  logits" and the logits when there are.
  std::string to_text() const;
};

/// The `k` most probable classes of each row of `probabilities` [N, classes], named by
/// `classes`, for `images` (one per row).
std::vector<Classification> top_classes(const torch::Tensor& probabilities, const std::vector<std::string>& images,
                                        const std::vector<std::string>& classes, int64_t k);

/// Activations of `layer` for every image of `source`, centre crop: float32 [N, D].
torch::Tensor extract_features(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                               Layer layer = Layer::kFc7, const InferenceOptions& options = {});

}  // namespace alexnet
