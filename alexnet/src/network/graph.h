#pragma once

// Internal: the inference network as a list of plain operations, for the exporters
// (ONNX, TorchScript) and anything else that writes the network in another system's
// terms. Parameters are named as `to_state_dict` (<alexnet/network/pytorch.h>) lays them out:
// the towers folded into grouped convolutions, fc layers whole.

#include <alexnet/network/model.h>
#include <alexnet/network/preprocessing.h>

#include <string>
#include <vector>

namespace alexnet::detail {

struct GraphStep {
  enum class Kind { kConv, kRelu, kTanh, kLRN, kMaxPool, kAvgPool, kFlatten, kLinear };
  Kind kind;
  std::string name;  ///< state dict prefix ("conv1", "features.0", "fc6") for kConv and kLinear
  int64_t kernel = 0, stride = 1, padding = 0, groups = 1;
  bool ceil_mode = false;  ///< kMaxPool: output size rounded up (Caffe's)
  /// kLRN in the averaged form of LibTorch, Caffe and ONNX:
  ///   b = a / (k + alpha / size * sum of a^2 over `size` channels)^beta,
  /// applied to each of `groups` equal channel groups separately (the paper's towers).
  int64_t size = 0;
  double alpha = 0, beta = 0, k = 0;
};

/// The steps `options`' network takes at inference (dropout is the identity there),
/// from images [N, 3, input_size, input_size] to logits [N, num_classes]. Throws
/// std::invalid_argument for what the operations above cannot say: an even LRN
/// window (ONNX and Caffe centre it differently from us), or torchvision's adaptive
/// pooling when pool5's side is not a multiple of 6.
std::vector<GraphStep> inference_graph(const AlexNetOptions& options);

/// What a consumer of an exported network needs to make its input, as one JSON object:
/// {"input": {"name", "layout": "NCHW", "colour": "RGB", "range": [0, 255]}} followed by
/// `Preprocessing::to_json()`'s fields, the mean image's with "where": where the
/// exporter put it (`mean_image_where`).
std::string preprocessing_json(const Preprocessing& pre, const std::string& mean_image_where);

/// pool5's side for `options` (6 for the paper at 227; 0 when an input is too small to
/// pool three times).
int64_t pool5_side(const AlexNetOptions& options);

}  // namespace alexnet::detail
