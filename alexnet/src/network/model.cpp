#include <alexnet/network/model.h>

#include "network/graph.h"
#include "network/json.h"
#include "network/loading.h"

#include <alexnet/network/convolution.h>
#include <alexnet/network/dropout.h>
#include <alexnet/network/pooling.h>

#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/pooling.h>
#include <torch/utils.h>

#include <algorithm>
#include <array>
#include <ostream>
#include <sstream>

namespace alexnet {
namespace {

// Section 3.5 / Figure 2: kernels per tower and their shapes.
constexpr int64_t kConv1 = 48, kConv2 = 128, kConv3 = 192, kConv4 = 192, kConv5 = 128;
constexpr int64_t kHidden = 2048;  // fc6 and fc7 neurons per tower
// Overlapping pooling, Section 3.4: z = 3, s = 2 (torchvision's network keeps them).
constexpr int64_t kPoolSize = 3, kPoolStride = 2;
// Inputs below this cannot give pool5 a single 1x1 map.
constexpr int64_t kMinInput = 67;
constexpr int64_t kMaxInput = 4096, kMaxClasses = int64_t{1} << 20;

// The pooling and the non-linearity `o` asks for (Sections 3.4 and 3.1).
torch::Tensor pool(const torch::Tensor& x, const AlexNetOptions& o) {
  return max_pool2d(x, o.pool_size(), o.pool_stride(), o.ceil_mode());
}

torch::Tensor activate(torch::Tensor x, const AlexNetOptions& o) {
  return o.activation() == Activation::kTanh ? x.tanh_() : x.relu_();
}

// conv2-conv5 (stride 1, padding k / 2) through alexnet::conv2d, whose backward pass
// suits oneDNN.
torch::Tensor convolve(const torch::nn::Conv2d& layer, const torch::Tensor& x) {
  return conv2d(x, layer->weight, layer->bias, /*stride=*/1, /*padding=*/layer->weight.size(2) / 2);
}

thread_local bool uninitialized = false;

// Under detail::Uninitialized: a 1x1 layer (LibTorch's constructor initialises what it
// builds) given its true sizes, its parameters allocated and never written.
torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad) {
  const auto options = torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(pad);
  if (!uninitialized) return torch::nn::Conv2d(options);
  torch::nn::Conv2d layer(torch::nn::Conv2dOptions(1, 1, 1).stride(stride).padding(pad));
  layer->options.in_channels(in).out_channels(out).kernel_size(kernel);
  torch::NoGradGuard no_grad;
  layer->weight.set_data(torch::empty({out, in, kernel, kernel}));
  layer->bias.set_data(torch::empty({out}));
  return layer;
}

torch::nn::Linear linear(int64_t in, int64_t out) {
  if (!uninitialized) return torch::nn::Linear(in, out);
  torch::nn::Linear layer(1, 1);
  layer->options = torch::nn::LinearOptions(in, out);
  torch::NoGradGuard no_grad;
  layer->weight.set_data(torch::empty({out, in}));
  layer->bias.set_data(torch::empty({out}));
  return layer;
}

// On CUDA each tower runs on a stream of its own and the exchanges wait on events,
// so the towers overlap (Section 3.2); on the CPU this is a no-op and the towers run
// in turn, each using every core. The streams are the model's (made once: the caching
// allocator keeps memory per stream, so new streams every step would multiply its
// cache). Work is ordered both ways on every device: each tower starts after what its
// device's current stream holds (the last update, gradient copies, the input), and
// each device's current stream continues after its tower. Device-generic c10 APIs keep
// this compiling against a CPU-only LibTorch.
class TowerStreams {
 public:
  TowerStreams(std::array<c10::Device, 2> devices, const c10::Device& input_device,
               const std::vector<c10::Stream>& streams)
      : devices_(devices) {
    active_ = devices[0].is_cuda();
    if (!active_) return;
    c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    for (int t : {0, 1}) {
      callers_[t] = impl.getStream(devices[t]);
      streams_[t] = streams.at(static_cast<size_t>(t));
    }
    for (int t : {0, 1}) {
      order(*callers_[t], *streams_[t]);
      if (input_device.is_cuda()) order(impl.getStream(input_device), *streams_[t]);
    }
  }

  c10::optional<c10::Stream> stream(int t) const { return streams_[t]; }

  // Moves the images onto tower t's device, on its stream.
  torch::Tensor take(int t, const torch::Tensor& images) const {
    c10::OptionalStreamGuard guard(stream(t));
    use(images, t);
    return images.to(devices_[t], /*non_blocking=*/true);
  }

  // Both towers' activations side by side (tower 0's channels first), on each tower's
  // device. On one device the towers share one tensor.
  std::array<torch::Tensor, 2> join(const std::array<torch::Tensor, 2>& h) const {
    if (devices_[0] == devices_[1]) {
      wait(0, 1);
      torch::Tensor joined;
      {
        c10::OptionalStreamGuard guard(stream(0));
        joined = torch::cat({h[0], h[1]}, 1);
      }
      use(h[1], 0);
      wait(1, 0);
      use(joined, 1);
      return {joined, joined};
    }
    std::array<torch::Tensor, 2> out;
    for (int t : {0, 1}) {
      const int o = 1 - t;
      c10::OptionalStreamGuard from(stream(o));
      c10::OptionalStreamGuard to(stream(t));
      const auto other = h[o].to(devices_[t], /*non_blocking=*/true);
      out[t] = t == 0 ? torch::cat({h[0], other}, 1) : torch::cat({other, h[1]}, 1);
    }
    return out;
  }

  // Hands the result back to the caller's stream on tower 0's device, and lets every
  // device's current stream continue only after its tower.
  torch::Tensor finish(const torch::Tensor& out) const {
    if (!active_) return out;
    for (int t : {0, 1}) {
      order(*streams_[t], *callers_[t]);
      order(*streams_[t], *callers_[0]);
    }
    out.record_stream(*callers_[0]);
    return out;
  }

 private:
  static void order(const c10::Stream& before, const c10::Stream& after) {
    if (before == after) return;
    c10::Event event(before.device_type());
    event.record(before);
    event.block(after);
  }
  void wait(int t, int other) const {
    if (active_) order(*streams_[other], *streams_[t]);
  }
  // Keeps the caching allocator from reusing `x` before tower t's stream is done with it.
  void use(const torch::Tensor& x, int t) const {
    if (active_ && x.is_cuda() && x.device() == devices_[t]) x.record_stream(*streams_[t]);
  }

  std::array<c10::Device, 2> devices_;
  bool active_ = false;
  std::array<c10::optional<c10::Stream>, 2> streams_;
  std::array<c10::optional<c10::Stream>, 2> callers_;
};

}  // namespace

AlexNetOptions AlexNetOptions::paper() { return AlexNetOptions(); }

AlexNetOptions AlexNetOptions::caffe() {
  return AlexNetOptions().lrn(LRNOptions::caffe()).init(Init::kCaffe).lrn_across_towers(true).ceil_mode(true);
}

AlexNetOptions AlexNetOptions::torchvision() {
  return AlexNetOptions()
      .architecture(Architecture::kTorchvision)
      .input_size(224)
      .conv1_padding(2)
      .lrn(c10::nullopt)
      .init(Init::kPyTorch);
}

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names{"paper", "caffe", "torchvision"};
  return names;
}

AlexNetOptions preset(const std::string& name, int64_t input_size) {
  const auto& known = preset_names();
  if (std::find(known.begin(), known.end(), name) == known.end()) {
    throw std::invalid_argument("unknown architecture preset '" + name + "' (expected one of: paper, caffe, torchvision)");
  }
  auto options = name == "paper" ? AlexNetOptions::paper() : name == "caffe" ? AlexNetOptions::caffe()
                                                                             : AlexNetOptions::torchvision();
  if (input_size > 0) {
    options.input_size(input_size);
    if (options.architecture() == Architecture::kTwoTower) {
      options.conv1_padding(input_size == 224 ? 2 : 0);
    }
  }
  return options;
}

std::string AlexNetOptions::to_json() const {
  detail::Json j;
  j["architecture"] = name_of(architecture());
  j["num_classes"] = num_classes();
  j["input_size"] = input_size();
  j["conv1_padding"] = conv1_padding();
  j["dropout"] = dropout();
  j["init"] = name_of(init());
  j["execution"] = name_of(execution());
  j["lrn_across_towers"] = lrn_across_towers();
  j["pool_before_lrn"] = pool_before_lrn();
  j["ceil_mode"] = ceil_mode();
  j["activation"] = name_of(activation());
  j["pool_size"] = pool_size();
  j["pool_stride"] = pool_stride();
  if (const auto& l = lrn()) {
    j["lrn"] = {{"size", l->size()}, {"alpha", l->alpha()}, {"beta", l->beta()}, {"k", l->k()}, {"mode", name_of(l->mode())}};
  } else {
    j["lrn"] = nullptr;
  }
  return detail::dump(j);
}

AlexNetOptions AlexNetOptions::from_json(const std::string& text) {
  const detail::Record r(text, "model options");
  r.only({"architecture", "num_classes", "input_size", "conv1_padding", "dropout", "init", "execution",
          "lrn_across_towers", "pool_before_lrn", "ceil_mode", "activation", "pool_size", "pool_stride", "lrn"});
  AlexNetOptions o;
  if (r.has("architecture")) o.architecture(r.choice<Architecture>("architecture"));
  if (r.has("num_classes")) o.num_classes(r.whole("num_classes"));
  if (r.has("input_size")) o.input_size(r.whole("input_size"));
  if (r.has("conv1_padding")) o.conv1_padding(r.whole("conv1_padding"));
  if (r.has("dropout")) o.dropout(r.real("dropout"));
  if (r.has("init")) o.init(r.choice<Init>("init"));
  if (r.has("execution")) o.execution(r.choice<Execution>("execution"));
  if (r.has("lrn_across_towers")) o.lrn_across_towers(r.flag("lrn_across_towers"));
  if (r.has("pool_before_lrn")) o.pool_before_lrn(r.flag("pool_before_lrn"));
  if (r.has("ceil_mode")) o.ceil_mode(r.flag("ceil_mode"));
  if (r.has("activation")) o.activation(r.choice<Activation>("activation"));
  if (r.has("pool_size")) o.pool_size(r.whole("pool_size"));
  if (r.has("pool_stride")) o.pool_stride(r.whole("pool_stride"));
  if (r.has("lrn")) {
    if (r.is_null("lrn")) {
      o.lrn(c10::nullopt);
    } else {
      const auto l = r.object("lrn");
      l.only({"size", "alpha", "beta", "k", "mode"});
      o.lrn(LRNOptions()
                .size(l.whole("size"))
                .alpha(l.real("alpha"))
                .beta(l.real("beta"))
                .k(l.real("k"))
                .mode(l.choice<LRNMode>("mode")));
    }
  }
  return o;
}

TowerImpl::TowerImpl(const AlexNetOptions& o, int64_t classes) {
  const int64_t pool5 = detail::pool5_side(o);
  // Two towers meet at conv3 and the fc layers (each sees both towers' maps); one
  // tower alone sees its own, with conv5 and the fc layers at the whole network's width.
  const bool alone = o.architecture() == Architecture::kOneTower;
  const int64_t towers = alone ? 1 : 2;
  const int64_t conv5_maps = alone ? 2 * kConv5 : kConv5, hidden = alone ? 2 * kHidden : kHidden;
  conv1 = register_module("conv1", conv(3, kConv1, 11, 4, o.conv1_padding()));
  conv2 = register_module("conv2", conv(kConv1, kConv2, 5, 1, 2));
  conv3 = register_module("conv3", conv(towers * kConv2, kConv3, 3, 1, 1));
  conv4 = register_module("conv4", conv(kConv3, kConv4, 3, 1, 1));
  conv5 = register_module("conv5", conv(kConv4, conv5_maps, 3, 1, 1));
  fc6 = register_module("fc6", linear(towers * conv5_maps * pool5 * pool5, hidden));
  fc7 = register_module("fc7", linear(towers * hidden, hidden));
  fc8 = register_module("fc8", linear(towers * hidden, classes));
}

AlexNetImpl::AlexNetImpl(AlexNetOptions options_) : options(std::move(options_)) { reset(); }

void validate(const AlexNetOptions& o) {
  auto check = [](bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument("AlexNet: " + message);
  };
  check(o.num_classes() >= 2, "num_classes must be at least 2, got " + std::to_string(o.num_classes()));
  // Upper bounds on what sizes the network: a damaged checkpoint or a typo must not
  // allocate without bound (ImageNet-21k has 21,841 classes).
  check(o.num_classes() <= kMaxClasses,
        "num_classes must be at most " + std::to_string(kMaxClasses) + ", got " + std::to_string(o.num_classes()));
  check(o.input_size() <= kMaxInput && o.conv1_padding() <= kMaxInput,
        "input size and conv1 padding must be at most " + std::to_string(kMaxInput) + ", got " +
            std::to_string(o.input_size()) + " and " + std::to_string(o.conv1_padding()));
  check(o.dropout() >= 0.0 && o.dropout() < 1.0,
        "dropout probability must be in [0, 1), got " + c10::str(o.dropout()));
  check(o.conv1_padding() >= 0, "conv1 padding must be non-negative, got " + std::to_string(o.conv1_padding()));
  check(o.input_size() + 2 * o.conv1_padding() >= kMinInput,
        "input size " + std::to_string(o.input_size()) + " with conv1 padding " + std::to_string(o.conv1_padding()) +
            " is too small: pool5 needs at least " + std::to_string(kMinInput) + " padded pixels");
  if (o.architecture() != Architecture::kTorchvision && o.pool_size() >= 1 && o.pool_stride() >= 1) {
    check(detail::pool5_side(o) >= 1, "input size " + std::to_string(o.input_size()) + " is too small for " +
                                          std::to_string(o.pool_size()) + "x" + std::to_string(o.pool_size()) +
                                          " pooling at stride " + std::to_string(o.pool_stride()));
  }
  check(!o.devices().empty() && o.devices().size() <= 2,
        "devices must name one device or one per tower, got " + std::to_string(o.devices().size()));
  const auto device0 = o.devices().front();
  const auto device1 = o.devices().back();
  check(device0.type() == device1.type(),
        "both towers must be on devices of one type, got " + device0.str() + " and " + device1.str());
  check(o.pool_size() >= 1 && o.pool_size() <= 7 && o.pool_stride() >= 1 && o.pool_stride() <= o.pool_size(),
        "pooling takes a window of 1 to 7 and a stride from 1 to the window, got " + std::to_string(o.pool_size()) +
            " and " + std::to_string(o.pool_stride()));
  if (o.architecture() == Architecture::kTorchvision) {
    check(o.devices().size() == 1 || device0 == device1,
          "the torchvision architecture has one tower; give one device, got " + std::to_string(o.devices().size()));
    check(!o.lrn().has_value(), "the torchvision architecture has no LRN");
    check(!o.lrn_across_towers() && !o.pool_before_lrn() && !o.ceil_mode(),
          "the torchvision architecture has one tower, no LRN and pools rounding down");
    check(o.activation() == Activation::kReLU && o.pool_size() == kPoolSize && o.pool_stride() == kPoolStride,
          "the torchvision architecture is torchvision's: ReLU and 3x3 pooling at stride 2 (the paper's "
          "alternatives are the two-tower and one-tower networks')");
  } else if (o.architecture() == Architecture::kOneTower) {
    check(o.devices().size() == 1 || device0 == device1,
          "the one-tower architecture runs on one device, got " + device0.str() + " and " + device1.str());
    check(o.execution() == Execution::kGrouped, "the one-tower architecture has no towers to run apart");
    check(!o.lrn_across_towers(), "the one-tower architecture has no towers for an LRN across them");
  } else {
    check(o.execution() == Execution::kTowers || device0 == device1,
          "grouped execution needs both towers on one device, got " + device0.str() + " and " + device1.str());
  }
}

void AlexNetImpl::reset() {
  streams_.clear();
  const auto& o = options;
  validate(o);
  const auto device0 = o.devices().front();
  const auto device1 = o.devices().back();

  if (o.architecture() == Architecture::kTorchvision) {
    namespace nn = torch::nn;
    features = register_module(
        "features",
        nn::Sequential(conv(3, 64, 11, 4, o.conv1_padding()), nn::ReLU(nn::ReLUOptions(true)),
                       nn::MaxPool2d(nn::MaxPool2dOptions(kPoolSize).stride(kPoolStride)),
                       conv(64, 192, 5, 1, 2), nn::ReLU(nn::ReLUOptions(true)),
                       nn::MaxPool2d(nn::MaxPool2dOptions(kPoolSize).stride(kPoolStride)),
                       conv(192, 384, 3, 1, 1), nn::ReLU(nn::ReLUOptions(true)),
                       conv(384, 256, 3, 1, 1), nn::ReLU(nn::ReLUOptions(true)),
                       conv(256, 256, 3, 1, 1), nn::ReLU(nn::ReLUOptions(true)),
                       nn::MaxPool2d(nn::MaxPool2dOptions(kPoolSize).stride(kPoolStride))));
    classifier = register_module(
        "classifier",
        nn::Sequential(nn::Dropout(o.dropout()), linear(256 * 6 * 6, 4096),
                       nn::ReLU(nn::ReLUOptions(true)), nn::Dropout(o.dropout()),
                       linear(4096, 4096), nn::ReLU(nn::ReLUOptions(true)),
                       linear(4096, o.num_classes())));
  } else if (o.architecture() == Architecture::kOneTower) {
    tower0 = register_module("tower0", Tower(o, o.num_classes()));
  } else {
    // Tower 0 takes the odd class when num_classes is odd.
    const int64_t classes0 = (o.num_classes() + 1) / 2;
    tower0 = register_module("tower0", Tower(o, classes0));
    tower1 = register_module("tower1", Tower(o, o.num_classes() - classes0));
  }
  initialize();
  if (tower0) {
    tower0->to(device0);
    if (tower1) tower1->to(device1);
  } else {
    features->to(device0);
    classifier->to(device0);
  }
}

std::vector<LearnedLayer> AlexNetImpl::learned_layers() const {
  std::vector<LearnedLayer> layers;
  if (tower0) {
    const std::array<const TowerImpl*, 2> towers{tower0.get(), tower1 ? tower1.get() : nullptr};
    auto add = [&](const char* name, auto member) {
      if (!tower1) {  // one tower alone
        const auto& layer = tower0.get()->*member;
        return layers.push_back({name, -1, layer->weight, layer->bias});
      }
      for (int64_t t : {0, 1}) {
        const auto& layer = towers[t]->*member;
        layers.push_back({name, t, layer->weight, layer->bias});
      }
    };
    add("conv1", &TowerImpl::conv1);
    add("conv2", &TowerImpl::conv2);
    add("conv3", &TowerImpl::conv3);
    add("conv4", &TowerImpl::conv4);
    add("conv5", &TowerImpl::conv5);
    add("fc6", &TowerImpl::fc6);
    add("fc7", &TowerImpl::fc7);
    add("fc8", &TowerImpl::fc8);
  } else {
    // torchvision's names: features.{0,3,6,8,10} and classifier.{1,4,6}.
    const auto params = named_parameters();
    const std::array<std::pair<const char*, const char*>, 8> names{{{"conv1", "features.0"},
                                                                     {"conv2", "features.3"},
                                                                     {"conv3", "features.6"},
                                                                     {"conv4", "features.8"},
                                                                     {"conv5", "features.10"},
                                                                     {"fc6", "classifier.1"},
                                                                     {"fc7", "classifier.4"},
                                                                     {"fc8", "classifier.6"}}};
    for (const auto& [name, prefix] : names) {
      layers.push_back({name, -1, params[std::string(prefix) + ".weight"],
                        params[std::string(prefix) + ".bias"]});
    }
  }
  return layers;
}

void AlexNetImpl::initialize() {
  if (options.init() == Init::kPyTorch) return;  // the layers' own reset() did it
  if (uninitialized) return;                       // weights about to be loaded
  torch::NoGradGuard no_grad;
  const bool paper = options.init() == Init::kPaper;
  for (const auto& layer : learned_layers()) {
    const auto& n = layer.name;
    // Section 5: "biases in conv2, conv4, conv5 and the fully connected hidden layers".
    const bool raised = n == "conv2" || n == "conv4" || n == "conv5" || n == "fc6" || n == "fc7";
    const bool hidden_fc = n == "fc6" || n == "fc7";
    layer.weight.normal_(0.0, paper || !hidden_fc ? 0.01 : 0.005);
    layer.bias.fill_(raised ? (paper ? 1.0 : 0.1) : 0.0);
  }
}

int64_t AlexNetImpl::pool5_size() const {
  if (options.architecture() == Architecture::kTorchvision) return 6;
  return detail::pool5_side(options);
}

std::vector<c10::Stream> AlexNetImpl::tower_streams() const {
  if (!tower1) return {};
  const auto devices = tower_devices();
  if (!devices[0].is_cuda()) return {};
  if (streams_.size() != 2 || streams_[0].device() != devices[0] || streams_[1].device() != devices[1]) {
    // From the high-priority pool: c10d's NCCL takes its streams from the other one, so
    // a tower never shares a stream with the all-reduce.
    c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    streams_ = {impl.getStreamFromGlobalPool(devices[0], /*isHighPriority=*/true),
                impl.getStreamFromGlobalPool(devices[1], /*isHighPriority=*/true)};
  }
  return streams_;
}

std::vector<c10::Device> AlexNetImpl::tower_devices() const {
  if (tower1) return {tower0->conv1->weight.device(), tower1->conv1->weight.device()};
  if (tower0) return {tower0->conv1->weight.device()};
  return {named_parameters()["features.0.weight"].device()};
}

void AlexNetImpl::set_execution(Execution execution) {
  TORCH_CHECK(tower1 || execution == Execution::kGrouped, "AlexNet: the ", name_of(options.architecture()),
              " architecture has no towers to run apart");
  if (tower1 && execution == Execution::kGrouped) {
    const auto devices = tower_devices();
    TORCH_CHECK(devices[0] == devices[1],
                "AlexNet: grouped execution needs both towers on one device, they are on ",
                devices[0], " and ", devices[1]);
  }
  options.execution(execution);
}

void AlexNetImpl::check_images(const torch::Tensor& images) const {
  const auto s = options.input_size();
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3,
              "AlexNet: expected images [N, 3, H, W], got ", images.sizes());
  if (tower0) {
    TORCH_CHECK(images.size(2) == s && images.size(3) == s, "AlexNet: expected images [N, 3, ", s,
                ", ", s, "] for input size ", s, ", got ", images.sizes());
  } else {
    TORCH_CHECK(images.size(2) + 2 * options.conv1_padding() >= 63 &&
                    images.size(3) + 2 * options.conv1_padding() >= 63,
                "AlexNet: images ", images.sizes(), " are too small for the torchvision architecture");
  }
}

torch::Tensor AlexNetImpl::forward(const torch::Tensor& images) {
  return forward_to(images, Layer::kLogits);
}

torch::Tensor AlexNetImpl::forward_to(const torch::Tensor& images, Layer last) {
  check_images(images);
  if (!tower0) return forward_torchvision(images, last);
  if (!tower1) return forward_one_tower(images, last);
  if (options.execution() == Execution::kGrouped) return forward_grouped(images, last);
  return forward_towers(images, last);
}

torch::Tensor AlexNetImpl::forward_torchvision(const torch::Tensor& images, Layer last) {
  auto x = features->forward(images.to(tower_devices()[0]));
  x = torch::adaptive_avg_pool2d(x, {6, 6}).flatten(1);
  // classifier: dropout, fc6, relu, dropout, fc7, relu, fc8; modules run up to each Layer.
  const std::array<size_t, 4> ends{0, 3, 6, 7};
  auto module = classifier->begin();
  for (size_t i = 0; i < ends[static_cast<size_t>(last)]; ++i, ++module) {
    // The Dropout modules name torchvision's layers; the masks are alexnet::dropout's.
    const auto* drop = module->ptr()->as<torch::nn::DropoutImpl>();
    x = drop ? alexnet::dropout(x, drop->options.p(), is_training()) : module->forward(x);
  }
  return x;
}

// Section 3.2's alternative: one tower, every layer seeing all the maps before it.
torch::Tensor AlexNetImpl::forward_one_tower(const torch::Tensor& images, Layer last) {
  auto& t = *tower0;
  const auto& o = options;
  const auto& lrn = o.lrn();
  auto normalise = [&](const torch::Tensor& x) { return lrn ? local_response_norm(x, *lrn) : x; };
  auto normalise_pool = [&](const torch::Tensor& x) {
    return o.pool_before_lrn() ? normalise(pool(x, o)) : pool(normalise(x), o);
  };
  auto x = normalise_pool(activate(t.conv1(images.to(tower_devices()[0])), o));
  x = normalise_pool(activate(convolve(t.conv2, x), o));
  x = activate(convolve(t.conv3, x), o);
  x = activate(convolve(t.conv4, x), o);
  x = pool(activate(convolve(t.conv5, x), o), o).flatten(1);
  if (last == Layer::kPool5) return x;
  const double p = o.dropout();
  x = alexnet::dropout(activate(t.fc6(x), o), p, is_training());
  if (last == Layer::kFc6) return x;
  x = alexnet::dropout(activate(t.fc7(x), o), p, is_training());
  if (last == Layer::kFc7) return x;
  return t.fc8(x);
}

// The same parameters as forward_towers, folded into grouped convolutions: the
// towers' kernels stacked along the output channels, groups = 2 where a layer sees
// only its own tower, and the LRN window kept inside each tower.
torch::Tensor AlexNetImpl::forward_grouped(const torch::Tensor& images, Layer last) {
  auto& t0 = *tower0;
  auto& t1 = *tower1;
  const auto& lrn = options.lrn();
  const auto& o = options;
  auto conv = [&](const torch::Tensor& x, const torch::nn::Conv2d& a, const torch::nn::Conv2d& b, int64_t stride,
                  int64_t padding, int64_t groups) {
    return activate(alexnet::conv2d(x, torch::cat({a->weight, b->weight}), torch::cat({a->bias, b->bias}), stride,
                                    padding, groups),
                    o);
  };
  auto normalise = [&](const torch::Tensor& x) {
    return lrn ? local_response_norm(x, *lrn, /*groups=*/options.lrn_across_towers() ? 1 : 2) : x;
  };
  // LRN then pooling (the paper), or pooling then LRN (Caffe's CaffeNet).
  auto normalise_pool = [&](const torch::Tensor& x) {
    return options.pool_before_lrn() ? normalise(pool(x, o)) : pool(normalise(x), o);
  };
  auto x = images.to(tower_devices()[0]);
  x = normalise_pool(conv(x, t0.conv1, t1.conv1, 4, options.conv1_padding(), 1));
  x = normalise_pool(conv(x, t0.conv2, t1.conv2, 1, 2, 2));
  x = conv(x, t0.conv3, t1.conv3, 1, 1, 1);
  x = conv(x, t0.conv4, t1.conv4, 1, 1, 2);
  x = pool(conv(x, t0.conv5, t1.conv5, 1, 1, 2), o).flatten(1);
  if (last == Layer::kPool5) return x;
  // fc layers see both towers: two products instead of concatenating fc6's 150 MB of weights.
  auto fc = [&](torch::nn::Linear a, torch::nn::Linear b) {
    return torch::cat({a->forward(x), b->forward(x)}, 1);
  };
  const double p = options.dropout();
  x = alexnet::dropout(activate(fc(t0.fc6, t1.fc6), o), p, is_training());
  if (last == Layer::kFc6) return x;
  x = alexnet::dropout(activate(fc(t0.fc7, t1.fc7), o), p, is_training());
  if (last == Layer::kFc7) return x;
  return fc(t0.fc8, t1.fc8);
}

// Section 3.2, Figure 2: each tower on its own device (or stream); the towers meet
// at conv3, fc6, fc7 and fc8.
torch::Tensor AlexNetImpl::forward_towers(const torch::Tensor& images, Layer last) {
  const auto devices = tower_devices();
  const TowerStreams streams({devices[0], devices[1]}, images.device(), tower_streams());
  const std::array<TowerImpl*, 2> towers{tower0.get(), tower1.get()};
  const auto& lrn = options.lrn();
  const double p = options.dropout();
  const auto& o = options;
  auto normalise = [&](const torch::Tensor& x) { return lrn ? local_response_norm(x, *lrn) : x; };
  auto each = [&](auto&& body) {
    std::array<torch::Tensor, 2> out;
    for (int t : {0, 1}) {
      c10::OptionalStreamGuard guard(streams.stream(t));
      out[t] = body(*towers[t], t);
    }
    return out;
  };

  // Each tower normalises its own maps; with lrn_across_towers the two meet for it
  // (their maps joined, normalised, split again), as Caffe's one blob does.
  auto across = [&](std::array<torch::Tensor, 2> h) {
    if (!lrn) return h;
    const auto joined = streams.join(h);
    return each([&](TowerImpl&, int t) {
      return local_response_norm(joined[t], *lrn).narrow(1, t * h[0].size(1), h[t].size(1)).contiguous();
    });
  };
  auto after_conv = [&](std::array<torch::Tensor, 2> h) {
    if (!options.lrn_across_towers()) {
      return each([&](TowerImpl&, int t) {
        return options.pool_before_lrn() ? normalise(pool(h[t], o)) : pool(normalise(h[t]), o);
      });
    }
    if (options.pool_before_lrn()) return across(each([&](TowerImpl&, int t) { return pool(h[t], o); }));
    h = across(h);
    return each([&](TowerImpl&, int t) { return pool(h[t], o); });
  };
  auto h = after_conv(each([&](TowerImpl& tower, int t) { return activate(tower.conv1(streams.take(t, images)), o); }));
  h = after_conv(each([&](TowerImpl& tower, int t) { return activate(convolve(tower.conv2, h[t]), o); }));
  auto joined = streams.join(h);
  h = each([&](TowerImpl& tower, int t) {
    auto x = activate(convolve(tower.conv3, joined[t]), o);
    x = activate(convolve(tower.conv4, x), o);
    return pool(activate(convolve(tower.conv5, x), o), o).flatten(1);
  });
  joined = streams.join(h);
  if (last == Layer::kPool5) return streams.finish(joined[0]);
  for (auto fc : {&TowerImpl::fc6, &TowerImpl::fc7}) {
    h = each([&](TowerImpl& tower, int t) {
      return alexnet::dropout(activate((tower.*fc)(joined[t]), o), p, is_training());
    });
    joined = streams.join(h);
    if (last == (fc == &TowerImpl::fc6 ? Layer::kFc6 : Layer::kFc7)) {
      return streams.finish(joined[0]);
    }
  }
  h = each([&](TowerImpl& tower, int t) { return tower.fc8(joined[t]); });
  return streams.finish(streams.join(h)[0]);
}

void AlexNetImpl::pretty_print(std::ostream& stream) const {
  stream << "alexnet::AlexNet(architecture=" << name_of(options.architecture())
         << ", num_classes=" << options.num_classes() << ", input_size=" << options.input_size()
         << ", execution=" << name_of(options.execution()) << ")";
}

template <>
const std::vector<std::pair<std::string, Architecture>>& names<Architecture>() {
  static const std::vector<std::pair<std::string, Architecture>> table{{"two_tower", Architecture::kTwoTower},
                                                                       {"torchvision", Architecture::kTorchvision},
                                                                       {"one_tower", Architecture::kOneTower}};
  return table;
}
template <>
const std::vector<std::pair<std::string, Activation>>& names<Activation>() {
  static const std::vector<std::pair<std::string, Activation>> table{{"relu", Activation::kReLU},
                                                                     {"tanh", Activation::kTanh}};
  return table;
}
template <>
const std::vector<std::pair<std::string, Execution>>& names<Execution>() {
  static const std::vector<std::pair<std::string, Execution>> table{{"grouped", Execution::kGrouped},
                                                                    {"towers", Execution::kTowers}};
  return table;
}
template <>
const std::vector<std::pair<std::string, Init>>& names<Init>() {
  static const std::vector<std::pair<std::string, Init>> table{
      {"paper", Init::kPaper}, {"caffe", Init::kCaffe}, {"pytorch", Init::kPyTorch}};
  return table;
}
template <>
const std::vector<std::pair<std::string, Layer>>& names<Layer>() {
  static const std::vector<std::pair<std::string, Layer>> table{
      {"pool5", Layer::kPool5}, {"fc6", Layer::kFc6}, {"fc7", Layer::kFc7}, {"logits", Layer::kLogits}};
  return table;
}

detail::Uninitialized::Uninitialized() : was_(uninitialized) {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator_ = generator.get_state();
  uninitialized = true;
}

detail::Uninitialized::~Uninitialized() {
  uninitialized = was_;
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(generator_);
}

bool detail::Uninitialized::active() { return uninitialized; }

}  // namespace alexnet
