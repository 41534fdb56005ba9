#pragma once

// PyTorch's files, both ways: state dicts that Python's `torch.save` wrote read into
// our models, and our models written as state dicts that `torch.load` reads.
//
//   auto weights = alexnet::read_state_dict("alexnet-owt-7be5be79.pth");
//   alexnet::AlexNet net = alexnet::from_torchvision(weights);
//   alexnet::write_state_dict(alexnet::to_state_dict(*net), "mine.pth");
//
// Reading never runs anything the file names. A pickle is a program that may call
// any Python function; this reader builds dicts, lists, tuples, numbers, strings and
// tensors, knows the handful of globals a state dict uses (collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter, torch.*Storage) and refuses
// a file that names any other, by name.

#include <alexnet/network/model.h>

#include <string>
#include <utility>
#include <vector>

namespace alexnet {

/// Names and tensors in the order the file holds them.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

/// Reads a file written by `torch.save`: the zip format (PyTorch 1.6 and later) or
/// the legacy format before it. The top-level object may be a state dict (a dict or
/// OrderedDict of tensors) or a checkpoint dict wrapping one under "state_dict",
/// "model" or "model_state_dict"; a "module." prefix on every key (DataParallel) is
/// removed. Tensors keep their dtype (float16 stays float16) and may share storage.
/// Throws std::runtime_error naming `path` and the reason.
StateDict read_state_dict(const std::string& path);

/// Writes `state` as `torch.save(OrderedDict)` does (zip format), atomically.
void write_state_dict(const StateDict& state, const std::string& path);

/// How a two-tower network's parameters are laid out in a PyTorch state dict.
/// torchvision's network has torchvision's own names.
///
/// Two-tower networks are written grouped, the towers' tensors concatenated along
/// the output dimension (tower 0 first), as a PyTorch module with groups = 2 at
/// conv2, conv4 and conv5 holds them (docs/deployment.md has that module):
///   conv1.weight [96, 3, 11, 11]  conv2.weight [256, 48, 5, 5]  conv3.weight [384, 256, 3, 3]
///   conv4.weight [384, 192, 3, 3] conv5.weight [256, 192, 3, 3]
///   fc6.weight [4096, 256 * s * s] fc7.weight [4096, 4096]       fc8.weight [classes, 4096]
/// and a `.bias` for each, where s is pool5's side (6 at 227).
StateDict to_state_dict(const AlexNetImpl& model);

/// Copies `state` (as `to_state_dict` lays it out for `model`'s architecture) into
/// `model`. Every name, shape and dtype is checked first: on error the model is
/// unchanged and the message names `source` and the missing, unexpected or
/// mismatched key. Floating-point tensors of another precision are converted.
void load_state_dict(AlexNetImpl& model, const StateDict& state, const std::string& source);

/// A torchvision-preset network holding torchvision weights (`torchvision.models.alexnet`'s
/// state dict); the number of classes comes from `classifier.6.weight`.
AlexNet from_torchvision(const StateDict& state, const std::string& source);

}  // namespace alexnet
