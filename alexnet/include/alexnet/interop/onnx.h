#pragma once

// ONNX export (target alexnet::interop, built when Debian's libonnx-dev is found: its
// onnx_proto library is the one Debian's LibTorch itself links). The file runs in ONNX
// Runtime, OpenCV's DNN module (4.6 and later) and anything else that reads opset 11.
//
//   auto [model, pre] = alexnet::load_for_inference("run/best.pt");
//   alexnet::save_onnx(*model, pre, "alexnet.onnx");
//
//   # Python, OpenCV:  net = cv2.dnn.readNetFromONNX("alexnet.onnx")
//   # Python, ONNX Runtime: onnxruntime.InferenceSession("alexnet.onnx").run(None, {"images": x})

#include <alexnet/network/model.h>
#include <alexnet/network/preprocessing.h>

#include <string>

namespace alexnet {

/// The opset the export writes. 11: MaxPool's ceil_mode (10), Split's sizes as an
/// attribute (before 13), and every operator here in OpenCV 4.6's ONNX importer and in
/// ONNX Runtime. IR version 6 goes with it.
constexpr int64_t kOnnxOpset = 11;

/// Writes `model` (inference mode: dropout is the identity) as an ONNX model with one
/// input "images" float32 [batch, 3, crop, crop] and one output "logits" [batch,
/// num_classes], the batch dimension dynamic. The paper's towers become grouped `Conv`
/// (group 2), each tower's LRN a Split, two `LRN`s and a Concat (ONNX's alpha is the
/// averaged one: the paper's sum form is converted), pooling `MaxPool` (ceil_mode as
/// the model's), fc layers `Gemm` (transB). The preprocessing goes into the model's
/// metadata: "alexnet.preprocessing" (JSON, the keys of `detail::preprocessing_json`),
/// and for a mean image "alexnet.mean_image", base64 of float32 [3, resize, resize]
/// little-endian. Written atomically; throws std::runtime_error naming `path`, or
/// std::invalid_argument for what opset 11 cannot say (an even LRN window,
/// torchvision's adaptive pooling from a side that is not a multiple of 6).
void save_onnx(const AlexNetImpl& model, const Preprocessing& preprocessing, const std::string& path);

}  // namespace alexnet
