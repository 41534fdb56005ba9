#pragma once

// TorchScript export: the network as a file that `torch.jit.load` (Python) and
// `torch::jit::load` (C++) run with nothing of this project, its logits equal to ours.
//
//   auto [model, pre] = alexnet::load_for_inference("run/best.pt");
//   alexnet::save_torchscript(*model, pre, "alexnet.ts");
//
//   # Python
//   files = {"alexnet.json": ""}
//   net = torch.jit.load("alexnet.ts", _extra_files=files)
//   logits = net(images)          # float32 [N, 3, crop, crop], RGB 0..255 minus the mean
//   pre = json.loads(files["alexnet.json"])

#include <alexnet/network/model.h>
#include <alexnet/network/preprocessing.h>

#include <string>

namespace alexnet {

/// Writes `model` (any preset, in inference mode: dropout is the identity) as a
/// TorchScript module whose `forward(images)` maps float32 [N, 3, crop, crop] to logits
/// [N, num_classes]. The parameters are the grouped layout of `to_state_dict`
/// (<alexnet/network/pytorch.h>), with '_' for '.'; LRN is written out in plain tensor
/// operations. The preprocessing goes beside the code as the extra file
/// "alexnet.json" (`detail::preprocessing_json`'s keys), and the mean image, when the
/// preprocessing has one, as the buffer `mean_image` float32 [3, resize, resize].
/// Written atomically; throws std::runtime_error naming `path`, or std::invalid_argument
/// for an LRN window the export cannot write (even).
void save_torchscript(const AlexNetImpl& model, const Preprocessing& preprocessing, const std::string& path);

}  // namespace alexnet
