#pragma once

// AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) as a LibTorch module.
//
//   #include <alexnet/network/model.h>
//   alexnet::AlexNet net(alexnet::AlexNetOptions::paper().num_classes(10));
//   auto logits = net->forward(torch::randn({8, 3, 227, 227}));
//
// The paper's network (Section 3.5, Figure 2) is two towers, each holding half the
// kernels of every layer; they exchange activations only at conv3 and the fully
// connected layers. Parameters live in the towers (`tower0.conv1.weight`, ...), and
// the same parameters run in one of two ways:
//   - Execution::kGrouped: one device, the towers folded into grouped convolutions
//     (groups = 2 at conv2, conv4, conv5), as Caffe does;
//   - Execution::kTowers: each tower on its own device and, on CUDA, its own stream.
// Both give the same numbers, so a checkpoint loads into either.
//
// Departures from the paper, all documented at the option that controls them:
//   - input is 227x227 (224 in the paper's text cannot give its 55x55 conv1 maps
//     without padding; `conv1_padding(2)` with 224 is the other way);
//   - `input_size` may be smaller, for small data sets: fc6 then sees fewer inputs;
//   - biases of 1 (Section 5) can leave the loss flat; `Init::kCaffe` uses 0.1.

#include <alexnet/network/lrn.h>
#include <alexnet/network/names.h>

#include <c10/core/Device.h>
#include <c10/core/Stream.h>
#include <c10/util/Optional.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

namespace alexnet {

/// Which network the module builds.
enum class Architecture {
  kTwoTower,     ///< The paper's two towers, 96-256-384-384-256 kernels, LRN (Section 3).
  kTorchvision,  ///< torchvision's one-tower 64-192-384-256-256 variant, no LRN.
  /// The alternative Section 3.2 measures the towers against: one tower with half the
  /// kernels of conv1..conv4 (48-128-192-192), conv5 (256) and the fc layers (4096)
  /// full size, so that the parameters stay about equal (59.8 million at 227).
  kOneTower,
};

/// The non-linearity after every convolution and hidden fully connected layer.
enum class Activation {
  kReLU,  ///< max(0, x): Section 3.1's choice.
  kTanh,  ///< tanh(x): the saturating one Section 3.1 (Figure 1) compares it with.
};

/// How a two-tower network runs; the parameters are the same either way.
enum class Execution {
  kGrouped,  ///< Both towers on one device as grouped convolutions.
  kTowers,   ///< One tower per device (or per CUDA stream on one device).
};

/// Initialisation of weights and biases.
enum class Init {
  kPaper,    ///< Weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0 (Section 5).
  kCaffe,    ///< Caffe's bvlc_alexnet: fc6/fc7 weights ~ N(0, 0.005), others N(0, 0.01); biases 0.1 where the paper has 1.
  kPyTorch,  ///< LibTorch's default (Kaiming-uniform), as torchvision's model starts.
};

/// Where `forward_to` stops.
enum class Layer {
  kPool5,   ///< pool5, flattened: [N, 256 * s * s].
  kFc6,     ///< fc6 after its ReLU (and dropout when training): [N, 4096].
  kFc7,     ///< fc7 after its ReLU (and dropout when training): [N, 4096] (the paper's Figure 4).
  kLogits,  ///< fc8: [N, num_classes], before the softmax.
};

struct AlexNetOptions {
  /// The paper's network; see the presets below for the others.
  AlexNetOptions() = default;

  /// The paper: two towers, exact LRN, N(0, 0.01) and bias-1 initialisation, 227 input.
  static AlexNetOptions paper();
  /// Caffe's bvlc_alexnet: two towers (group 2), LRN k = 1 with alpha averaged over a
  /// window spanning both towers' channels, pooling that rounds up, biases 0.1.
  static AlexNetOptions caffe();
  /// torchvision.models.alexnet: one tower, no LRN, adaptive 6x6 pooling, 224 input,
  /// parameter names identical to torchvision's state_dict.
  static AlexNetOptions torchvision();

  /// The network: the paper's two towers or torchvision's one tower.
  TORCH_ARG(Architecture, architecture) = Architecture::kTwoTower;
  /// Outputs of fc8 (1000 for ImageNet).
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// Side of the square input. Two-tower: fixes fc6's inputs (256 x 6 x 6 at 227);
  /// torchvision: pools adaptively to 6x6, so this is only the size data is cropped to.
  TORCH_ARG(int64_t, input_size) = 227;
  /// Zero padding of conv1; 0 with 227 or 2 with 224 give the paper's 55x55 maps.
  TORCH_ARG(int64_t, conv1_padding) = 0;
  /// Dropout probability on the outputs of fc6 and fc7 (Section 4.2).
  TORCH_ARG(double, dropout) = 0.5;
  /// LRN after the ReLUs of conv1 and conv2 (Section 3.3); none for torchvision's.
  TORCH_ARG(c10::optional<LRNOptions>, lrn) = LRNOptions::paper();
  /// How weights and biases start.
  TORCH_ARG(Init, init) = Init::kPaper;
  /// How the two towers run (two-tower networks only).
  TORCH_ARG(Execution, execution) = Execution::kGrouped;
  /// Tower placement: one device for both towers, or one per tower (tower0, tower1).
  TORCH_ARG(std::vector<c10::Device>, devices) = {c10::Device(c10::kCPU)};
  /// LRN over both towers' channels at once (Caffe's bvlc_alexnet, which runs the
  /// towers as one blob) instead of within each tower (the paper: each GPU normalises
  /// its own maps, Section 3.3 within 3.2).
  TORCH_ARG(bool, lrn_across_towers) = false;
  /// Pool, then normalise, after conv1 and conv2 (Caffe's bvlc_reference_caffenet);
  /// the paper normalises, then pools.
  TORCH_ARG(bool, pool_before_lrn) = false;
  /// Overlapping pooling rounds its output size up, as Caffe's does (the same sizes as
  /// rounding down at 227, where every pool fits exactly).
  TORCH_ARG(bool, ceil_mode) = false;
  /// The non-linearity (Section 3.1: ReLU; tanh is Figure 1's alternative).
  TORCH_ARG(Activation, activation) = Activation::kReLU;
  /// Max pooling's window z (Section 3.4: 3, overlapping).
  TORCH_ARG(int64_t, pool_size) = 3;
  /// Max pooling's stride s (Section 3.4: 2; z = 2, s = 2 is the non-overlapping
  /// alternative with the same output sizes).
  TORCH_ARG(int64_t, pool_stride) = 2;

 public:
  /// Every option but `devices` (where to run is the loader's choice) as one JSON
  /// object, keys as the setters: {"architecture": "two_tower", "num_classes": 1000,
  /// ..., "lrn": {"size", "alpha", "beta", "k", "mode"} or null}. What checkpoints and
  /// exported files carry.
  std::string to_json() const;
  /// Reads what to_json wrote; an option missing from `text` keeps its default (files
  /// written before it existed). Throws std::invalid_argument naming the option that
  /// is malformed or unknown.
  static AlexNetOptions from_json(const std::string& text);
};

/// Throws std::invalid_argument naming the first option the network cannot be built
/// with (too few classes, an input too small for pool5, devices that do not fit the
/// execution); what the module's constructor checks, without building it.
void validate(const AlexNetOptions& options);

/// The options of a preset by name: "paper", "caffe" or "torchvision". An
/// `input_size` of 224 for a two-tower preset pads conv1 by 2, as torchvision does.
/// Throws naming the value and the choices.
AlexNetOptions preset(const std::string& name, int64_t input_size = 0);
/// The presets' names, in the order above.
const std::vector<std::string>& preset_names();

/// One learned layer, in forward order: its paper name and, for two-tower
/// networks, the tower (0 or 1) it belongs to (-1 for one-tower networks).
struct LearnedLayer {
  std::string name;
  int64_t tower;
  torch::Tensor weight;
  torch::Tensor bias;
};

/// One of the paper's towers: half the kernels of every layer (Section 3.2).
/// conv1, conv2, conv4 and conv5 see only this tower's maps; conv3, fc6, fc7 and
/// fc8 see both towers'. Architecture::kOneTower's network is one such tower alone,
/// with conv5 and the fc layers twice as wide.
class TowerImpl : public torch::nn::Module {
 public:
  TowerImpl(const AlexNetOptions& options, int64_t classes);

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr}, conv4{nullptr},
      conv5{nullptr};
  torch::nn::Linear fc6{nullptr}, fc7{nullptr}, fc8{nullptr};
};
TORCH_MODULE(Tower);

class AlexNetImpl : public torch::nn::Cloneable<AlexNetImpl> {
 public:
  explicit AlexNetImpl(AlexNetOptions options = {});

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// Logits [N, num_classes] for images [N, 3, input_size, input_size]. The result is
  /// on tower 0's device.
  torch::Tensor forward(const torch::Tensor& images);
  /// The activations of `last` (for features and retrieval, Section 6.1).
  torch::Tensor forward_to(const torch::Tensor& images, Layer last);

  /// Switches between grouped and tower execution; the parameters are unchanged.
  void set_execution(Execution execution);
  /// The devices the towers' parameters are on now (one entry for torchvision's).
  std::vector<c10::Device> tower_devices() const;
  /// Execution::kTowers on CUDA: the two streams the towers run on, one per tower, made
  /// on first use and kept while the towers stay on their devices (empty on the CPU and
  /// for torchvision's network). Callers need not synchronise with them: forward orders
  /// its work after each device's current stream and that stream after its tower.
  std::vector<c10::Stream> tower_streams() const;
  /// Learned layers in forward order (conv1 .. fc8, tower 0 before tower 1).
  std::vector<LearnedLayer> learned_layers() const;
  /// Side of pool5's maps for this input size (6 at 227).
  int64_t pool5_size() const;

  AlexNetOptions options;

  Tower tower0{nullptr}, tower1{nullptr};
  torch::nn::Sequential features{nullptr}, classifier{nullptr};

 private:
  torch::Tensor forward_grouped(const torch::Tensor& images, Layer last);
  torch::Tensor forward_towers(const torch::Tensor& images, Layer last);
  torch::Tensor forward_torchvision(const torch::Tensor& images, Layer last);
  torch::Tensor forward_one_tower(const torch::Tensor& images, Layer last);
  void check_images(const torch::Tensor& images) const;
  void initialize();

  mutable std::vector<c10::Stream> streams_;  // tower_streams(), once made
};
TORCH_MODULE(AlexNet);

template <>
const std::vector<std::pair<std::string, Architecture>>& names<Architecture>();  ///< two_tower, torchvision, one_tower
template <>
const std::vector<std::pair<std::string, Activation>>& names<Activation>();  ///< relu, tanh
template <>
const std::vector<std::pair<std::string, Execution>>& names<Execution>();  ///< grouped, towers
template <>
const std::vector<std::pair<std::string, Init>>& names<Init>();  ///< paper, caffe, pytorch
template <>
const std::vector<std::pair<std::string, Layer>>& names<Layer>();  ///< pool5, fc6, fc7, logits

}  // namespace alexnet
