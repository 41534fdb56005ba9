#include "helpers.h"

#include <alexnet/network/dropout.h>
#include <alexnet/network/lrn.h>
#include <alexnet/network/model.h>
#include <alexnet/network/pooling.h>
#include <alexnet/network/pytorch.h>
#include <alexnet/network/runtime.h>

#include <catch2/catch.hpp>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

using alexnet::AlexNet;
using alexnet::AlexNetOptions;
using alexnet::Execution;
using alexnet::Layer;
using alexnet::test::relative_error;

namespace {

int64_t count_parameters(const AlexNet& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

std::vector<std::string> keys(const AlexNet& model) {
  std::vector<std::string> out;
  for (const auto& p : model->named_parameters()) out.push_back(p.key());
  return out;
}

// Runs forward and backward of `loss = sum(out * weights)`; returns the output and
// every parameter's gradient, in named_parameters() order.
std::vector<at::Tensor> forward_backward(AlexNet& model, const at::Tensor& x, const at::Tensor& weights,
                                         Layer last = Layer::kLogits) {
  model->zero_grad();
  const auto out = model->forward_to(x, last);
  (out * weights.to(out.device())).sum().backward();
  std::vector<at::Tensor> result{out.detach().cpu()};
  for (const auto& p : model->parameters()) result.push_back(p.grad().detach().cpu());
  return result;
}

void check_same(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, double tolerance) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("tensor " << i << " (0 is the output, then parameters in order)");
    CHECK(relative_error(a[i], b[i]) < tolerance);
  }
}

}  // namespace

TEST_CASE("Presets have the paper's and torchvision's parameter counts", "[model]") {
  CHECK(count_parameters(AlexNet(AlexNetOptions::paper())) == 60965224);
  CHECK(count_parameters(AlexNet(AlexNetOptions::caffe())) == 60965224);
  CHECK(count_parameters(AlexNet(AlexNetOptions::torchvision())) == 61100840);
  // 224 with padding 2 is the same network as 227 without.
  CHECK(count_parameters(AlexNet(alexnet::preset("paper", 224))) == 60965224);
}

TEST_CASE("Parameter names are pinned: checkpoints depend on them", "[model]") {
  std::vector<std::string> expected;
  for (const char* tower : {"tower0", "tower1"}) {
    for (const char* layer : {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"}) {
      for (const char* kind : {"weight", "bias"}) {
        expected.push_back(std::string(tower) + "." + layer + "." + kind);
      }
    }
  }
  CHECK(keys(AlexNet(AlexNetOptions::paper())) == expected);
  // Exactly torchvision.models.alexnet().state_dict().keys().
  const std::vector<std::string> torchvision{
      "features.0.weight",   "features.0.bias",   "features.3.weight",   "features.3.bias",
      "features.6.weight",   "features.6.bias",   "features.8.weight",   "features.8.bias",
      "features.10.weight",  "features.10.bias",  "classifier.1.weight", "classifier.1.bias",
      "classifier.4.weight", "classifier.4.bias", "classifier.6.weight", "classifier.6.bias"};
  CHECK(keys(AlexNet(AlexNetOptions::torchvision())) == torchvision);
}

TEST_CASE("Forward gives logits and features of the documented shapes", "[model]") {
  torch::NoGradGuard no_grad;
  AlexNet paper(AlexNetOptions::paper().num_classes(11));
  paper->eval();
  const auto x = at::randn({2, 3, 227, 227});
  CHECK(paper->forward(x).sizes() == at::IntArrayRef({2, 11}));
  CHECK(paper->forward_to(x, Layer::kPool5).sizes() == at::IntArrayRef({2, 9216}));
  CHECK(paper->forward_to(x, Layer::kFc7).sizes() == at::IntArrayRef({2, 4096}));
  paper->set_execution(Execution::kTowers);
  CHECK(paper->forward(x).sizes() == at::IntArrayRef({2, 11}));

  AlexNet padded(alexnet::preset("paper", 224).num_classes(5));
  CHECK(padded->forward(at::randn({1, 3, 224, 224})).sizes() == at::IntArrayRef({1, 5}));
  AlexNet small(AlexNetOptions::paper().input_size(67).num_classes(10));
  CHECK(small->pool5_size() == 1);
  CHECK(small->forward(at::randn({3, 3, 67, 67})).sizes() == at::IntArrayRef({3, 10}));

  AlexNet tv(AlexNetOptions::torchvision());
  CHECK(tv->forward(at::randn({1, 3, 224, 224})).sizes() == at::IntArrayRef({1, 1000}));
  // Adaptive pooling: torchvision's accepts other sizes.
  CHECK(tv->forward_to(at::randn({1, 3, 256, 256}), Layer::kFc6).sizes() == at::IntArrayRef({1, 4096}));
}

TEST_CASE("Bad options and inputs are refused with messages that name them", "[model]") {
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().input_size(60)),
                    Catch::Contains("input size 60") && Catch::Contains("too small"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().num_classes(1)),
                    Catch::Contains("num_classes must be at least 2, got 1"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().dropout(1.0)), Catch::Contains("dropout probability"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions::torchvision().lrn(alexnet::LRNOptions())),
                    Catch::Contains("no LRN"));
  CHECK_THROWS_WITH(alexnet::preset("vgg"), Catch::Contains("unknown architecture preset 'vgg'") &&
                                                Catch::Contains("paper, caffe, torchvision"));
  CHECK_THROWS_WITH(alexnet::parse<Layer>("layer", "fc9"), Catch::Contains("unknown layer 'fc9'"));
  AlexNet model(AlexNetOptions().num_classes(10));
  CHECK_THROWS_WITH(model->forward(at::randn({1, 3, 224, 224})),
                    Catch::Contains("expected images [N, 3, 227, 227]") && Catch::Contains("[1, 3, 224, 224]"));
  CHECK_THROWS_WITH(model->forward(at::randn({3, 227, 227})), Catch::Contains("expected images [N, 3, H, W]"));
}

TEST_CASE("Grouped and tower execution agree on outputs and gradients", "[model]") {
  torch::manual_seed(7);
  // Caffe's initialisation keeps activations from growing through bias-1 layers.
  AlexNet model(AlexNetOptions::caffe().num_classes(10).dropout(0.0));
  const auto x = at::randn({3, 3, 227, 227}) * 50;
  const auto weights = at::randn({3, 10});
  const auto grouped = forward_backward(model, x, weights);
  model->set_execution(Execution::kTowers);
  const auto towers = forward_backward(model, x, weights);
  check_same(grouped, towers, 1e-5);
  // Features too, at every layer where the towers meet.
  for (auto layer : {Layer::kPool5, Layer::kFc6, Layer::kFc7}) {
    INFO("layer " << alexnet::name_of(layer));
    const auto w = at::randn({3, layer == Layer::kPool5 ? 9216 : 4096});
    model->set_execution(Execution::kGrouped);
    const auto a = forward_backward(model, x, w, layer);
    model->set_execution(Execution::kTowers);
    check_same(a, forward_backward(model, x, w, layer), 1e-5);
  }
}

TEST_CASE("Grouped and tower execution agree tightly in double", "[model]") {
  torch::manual_seed(8);
  // The paper; Caffe's LRN across both towers with pooling that rounds up (103 gives
  // 24x24 conv1 maps, where rounding up adds a row); CaffeNet's pooling before LRN.
  const auto caffe = AlexNetOptions::caffe().input_size(103);
  for (const auto& options : {AlexNetOptions::paper().input_size(99), caffe, AlexNetOptions(caffe).pool_before_lrn(true)}) {
    INFO("lrn_across_towers " << options.lrn_across_towers() << ", pool_before_lrn " << options.pool_before_lrn());
    AlexNet model(AlexNetOptions(options).num_classes(7).dropout(0.0));
    model->to(at::kDouble);
    const auto x = at::randn({2, 3, options.input_size(), options.input_size()}, at::kDouble) * 50;
    const auto weights = at::randn({2, 7}, at::kDouble);
    const auto grouped = forward_backward(model, x, weights);
    model->set_execution(Execution::kTowers);
    check_same(grouped, forward_backward(model, x, weights), 1e-12);
  }
}

TEST_CASE("Caffe's pooling rounds up, the paper's down", "[model]") {
  const auto input = at::zeros({1, 3, 103, 103});
  CHECK(AlexNet(AlexNetOptions::caffe().input_size(103))->pool5_size() == 3);
  CHECK(AlexNet(AlexNetOptions::paper().input_size(103))->pool5_size() == 2);
  CHECK(AlexNet(AlexNetOptions::caffe().input_size(103).num_classes(5))->forward(input).sizes() == at::IntArrayRef{1, 5});
}

namespace {

// The network's forward pass written out from its grouped state dict with LibTorch's
// plain operators: `activation` after every layer but fc8, LRN inside each of `groups`
// channel groups (the reference composite), `z` x `z` max pooling at stride `s`.
at::Tensor reference_forward(const AlexNet& model, const at::Tensor& x) {
  const auto& o = model->options;
  std::map<std::string, at::Tensor> w;
  for (const auto& [key, tensor] : alexnet::to_state_dict(*model)) w[key] = tensor.detach();
  const bool one = o.architecture() == alexnet::Architecture::kOneTower;
  const int64_t groups = one ? 1 : 2;
  auto act = [&](const at::Tensor& v) { return o.activation() == alexnet::Activation::kTanh ? torch::tanh(v) : torch::relu(v); };
  auto conv = [&](const at::Tensor& v, const std::string& n, int64_t stride, int64_t pad, int64_t g) {
    return act(torch::conv2d(v, w[n + ".weight"], w[n + ".bias"], stride, pad, 1, g));
  };
  auto pool = [&](const at::Tensor& v) { return torch::max_pool2d(v, o.pool_size(), o.pool_stride()); };
  auto lrn = [&](const at::Tensor& v) {
    return o.lrn() ? alexnet::detail::local_response_norm_composite(v, *o.lrn(), groups) : v;
  };
  auto h = pool(lrn(conv(x, "conv1", 4, o.conv1_padding(), 1)));
  h = pool(lrn(conv(h, "conv2", 1, 2, groups)));
  h = conv(h, "conv3", 1, 1, 1);
  h = conv(h, "conv4", 1, 1, groups);
  h = pool(conv(h, "conv5", 1, 1, groups)).flatten(1);
  h = act(torch::linear(h, w["fc6.weight"], w["fc6.bias"]));
  h = act(torch::linear(h, w["fc7.weight"], w["fc7.bias"]));
  return torch::linear(h, w["fc8.weight"], w["fc8.bias"]);
}

}  // namespace

// Sections 3.1-3.4 measure each choice against an alternative; each alternative is a
// network of its own, checked against the same forward pass written out by hand.
TEST_CASE("The paper's alternatives: tanh, non-overlapping pooling, one tower, no LRN", "[model]") {
  const auto x = at::randn({2, 3, 227, 227}) * 50;
  const std::vector<std::pair<std::string, AlexNetOptions>> variants{
      {"paper", AlexNetOptions::paper().num_classes(10)},
      {"tanh", AlexNetOptions::paper().num_classes(10).activation(alexnet::Activation::kTanh)},
      {"pool 2/2", AlexNetOptions::paper().num_classes(10).pool_size(2).pool_stride(2)},
      {"one tower", AlexNetOptions::paper().num_classes(10).architecture(alexnet::Architecture::kOneTower)},
      {"no LRN", AlexNetOptions::paper().num_classes(10).lrn(c10::nullopt)},
      {"one tower, tanh, 2/2, no LRN", AlexNetOptions::paper()
                                           .num_classes(10)
                                           .architecture(alexnet::Architecture::kOneTower)
                                           .activation(alexnet::Activation::kTanh)
                                           .pool_size(2)
                                           .pool_stride(2)
                                           .lrn(c10::nullopt)}};
  for (const auto& [name, options] : variants) {
    INFO(name);
    torch::manual_seed(3);
    AlexNet model(AlexNetOptions(options).init(alexnet::Init::kPyTorch).dropout(0));
    model->eval();
    torch::NoGradGuard no_grad;
    CHECK(relative_error(model->forward(x), reference_forward(model, x)) < 1e-5);
  }
  // Non-overlapping 2x2 pooling at stride 2 gives the overlapping pooling's sizes (Section
  // 3.4: "which produces output of the same dimensions").
  torch::NoGradGuard no_grad;
  AlexNet two(AlexNetOptions::paper().num_classes(10).pool_size(2).pool_stride(2));
  two->eval();
  CHECK(two->forward_to(x, Layer::kPool5).sizes() == at::IntArrayRef({2, 256 * 6 * 6}));
  CHECK(alexnet::max_pool2d(at::zeros({1, 1, 55, 55}), 2, 2).size(2) == 27);
  CHECK(alexnet::max_pool2d(at::zeros({1, 1, 27, 27}), 2, 2).size(2) == 13);
  CHECK(alexnet::max_pool2d(at::zeros({1, 1, 13, 13}), 2, 2).size(2) == 6);
  // One tower: conv1 48 (3 x 11 x 11 + 1 each), conv2 128 (48 x 25 + 1), conv3 192
  // (128 x 9 + 1), conv4 192 (192 x 9 + 1), conv5 256 (192 x 9 + 1), fc6 4096 (9216 + 1),
  // fc7 4096 (4096 + 1), fc8 1000 (4096 + 1).
  const int64_t by_hand = 48 * (3 * 121 + 1) + 128 * (48 * 25 + 1) + 192 * (128 * 9 + 1) + 192 * (192 * 9 + 1) +
                          256 * (192 * 9 + 1) + 4096 * (9216 + 1) + 4096 * (4096 + 1) + 1000 * (4096 + 1);
  CHECK(by_hand == 59798312);
  CHECK(count_parameters(AlexNet(AlexNetOptions::paper().architecture(alexnet::Architecture::kOneTower))) == by_hand);
  CHECK(keys(AlexNet(AlexNetOptions::paper().architecture(alexnet::Architecture::kOneTower).num_classes(2))).front() ==
        "tower0.conv1.weight");
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions::torchvision().activation(alexnet::Activation::kTanh)),
                    Catch::Contains("the torchvision architecture is torchvision's"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions::paper().pool_size(2).pool_stride(3)),
                    Catch::Contains("pooling takes a window of 1 to 7 and a stride from 1 to the window, got 2 and 3"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions::paper().architecture(alexnet::Architecture::kOneTower).execution(Execution::kTowers)),
                    Catch::Contains("the one-tower architecture has no towers to run apart"));
  // Every option survives the checkpoint's record.
  const auto every = AlexNetOptions::paper()
                         .architecture(alexnet::Architecture::kOneTower)
                         .activation(alexnet::Activation::kTanh)
                         .pool_size(2)
                         .pool_stride(2)
                         .lrn(c10::nullopt);
  CHECK(AlexNetOptions::from_json(every.to_json()).to_json() == every.to_json());
}

TEST_CASE("alexnet::dropout keeps 1 - p of the units, scaled, its masks fixed by the seed and independent",
          "[model][dropout]") {
  for (const auto type : {at::kFloat, at::kBFloat16, at::kDouble}) {
    for (const double p : {0.5, 0.3, 0.9}) {
      INFO("dtype " << type << ", p " << p);
      const auto x = at::ones({256, 4096}, at::dtype(type));  // 1,048,576 units
      torch::manual_seed(5);
      const auto y = alexnet::dropout(x, p, true).to(at::kDouble);
      const double dropped = (y == 0).to(at::kDouble).mean().item<double>();
      CHECK(std::abs(dropped - p) < 0.003);  // 6 standard errors
      // Kept units carry exactly 1 / (1 - p) in the input's type (bfloat16: rounded once).
      const double scale = at::scalar_tensor(1 / (1 - p), at::dtype(type)).item<double>();
      CHECK(at::equal(y.masked_select(y != 0), at::full({(y != 0).sum().item<int64_t>()}, scale, at::kDouble)));
      torch::manual_seed(5);
      CHECK(at::equal(alexnet::dropout(x, p, true).to(at::kDouble), y));  // the seed fixes the mask
    }
  }
  const auto x = at::ones({256, 4096});
  torch::manual_seed(6);
  const auto a = alexnet::dropout(x, 0.5, true) != 0, b = alexnet::dropout(x, 0.5, true) != 0;
  // Two draws, neighbours along a row and down a column: independent masks agree on
  // about half the units (a mask repeating itself, or shifted, would agree far more).
  auto agreement = [](const at::Tensor& u, const at::Tensor& v) { return (u == v).to(at::kDouble).mean().item<double>(); };
  CHECK(std::abs(agreement(a, b) - 0.5) < 0.003);
  CHECK(std::abs(agreement(a.narrow(1, 0, 4095), a.narrow(1, 1, 4095)) - 0.5) < 0.003);
  CHECK(std::abs(agreement(a.narrow(0, 0, 255), a.narrow(0, 1, 255)) - 0.5) < 0.003);
  CHECK(std::abs(agreement(a.narrow(0, 0, 128), a.narrow(0, 128, 128)) - 0.5) < 0.003);
}

TEST_CASE("alexnet::dropout's gradient passes through the kept units alone, scaled as they were",
          "[model][dropout]") {
  for (const bool channels_last : {false, true}) {
    INFO("channels-last " << channels_last);
    auto x = at::randn({8, 16, 9, 9});
    if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    x.requires_grad_(true);
    torch::manual_seed(7);
    const auto y = alexnet::dropout(x, 0.4, true);
    CHECK(y.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    const auto g = at::randn_like(y);
    y.backward(g);
    const auto kept = (y != 0).to(at::kFloat);
    CHECK(at::equal(y.detach(), x.detach() * (kept / 0.6f)));
    CHECK(at::equal(x.grad(), g * (kept / 0.6f)));
  }
  // Not training, or p = 0: the input itself. NaN stays NaN where dropped (the mask
  // multiplies, as in torch::dropout); p = 1 zeroes; p outside [0, 1] is refused.
  const auto x = at::randn({4, 100});
  CHECK(alexnet::dropout(x, 0.5, false).is_same(x));
  CHECK(alexnet::dropout(x, 0, true).is_same(x));
  CHECK(alexnet::dropout(at::full({4, 100}, NAN), 0.5, true).isnan().all().item<bool>());
  CHECK(at::equal(alexnet::dropout(x, 1, true), at::zeros_like(x)));
  CHECK_THROWS_WITH(alexnet::dropout(x, 1.5, true), Catch::Contains("probability must be between 0 and 1, got 1.5"));
}

TEST_CASE("Dropout is active only in training", "[model]") {
  torch::manual_seed(9);
  AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(4));
  const auto x = at::randn({2, 3, 67, 67}) * 50;
  torch::NoGradGuard no_grad;
  model->eval();
  CHECK(at::equal(model->forward(x), model->forward(x)));
  model->train();
  const auto fc7 = model->forward_to(x, Layer::kFc7);
  // Roughly half of fc7's outputs are dropped (the ReLU zeroes some more).
  const double zeros = (fc7 == 0).to(at::kDouble).mean().item<double>();
  CHECK(zeros > 0.4);
  CHECK(!at::equal(model->forward(x), model->forward(x)));
  // fc6 has no dropout before it: in training each of its live outputs is dropped with
  // probability p and the others are scaled by 1 / (1 - p) (inverted dropout: evaluation
  // needs no scaling).
  const double p = model->options.dropout();
  REQUIRE(p == 0.5);
  const auto trained = model->forward_to(x, Layer::kFc6);
  model->eval();
  const auto evaluated = model->forward_to(x, Layer::kFc6);
  const auto live = evaluated > 0;
  REQUIRE(live.sum().item<int64_t>() > 2000);
  const double dropped = (trained.masked_select(live) == 0).to(at::kDouble).mean().item<double>();
  CHECK(dropped > p - 0.05);
  CHECK(dropped < p + 0.05);
  const auto kept = trained != 0;
  CHECK(torch::allclose(trained.masked_select(kept), evaluated.masked_select(kept) / (1 - p), 1e-5, 0));
}

TEST_CASE("Initialisation follows the paper and Caffe, layer by layer", "[model]") {
  auto check_layers = [](const AlexNet& model, bool paper) {
    for (const auto& layer : model->learned_layers()) {
      INFO(layer.name << " tower " << layer.tower);
      const auto& n = layer.name;
      const bool hidden_fc = n == "fc6" || n == "fc7";
      const bool raised = hidden_fc || n == "conv2" || n == "conv4" || n == "conv5";
      const double sd = paper || !hidden_fc ? 0.01 : 0.005;
      const auto w = layer.weight.to(at::kDouble);
      const double count = static_cast<double>(w.numel());
      // The sample mean and standard deviation of N(0, sd) draws, within 5 standard errors.
      CHECK(std::abs(w.mean().item<double>()) < 5 * sd / std::sqrt(count));
      CHECK(std::abs(w.std().item<double>() - sd) < 5 * sd / std::sqrt(2 * count));
      const double bias = raised ? (paper ? 1.0 : 0.1) : 0.0;
      CHECK(at::equal(layer.bias, at::full_like(layer.bias, bias)));
    }
  };
  torch::manual_seed(10);
  AlexNet paper(AlexNetOptions::paper());
  check_layers(paper, true);
  AlexNet caffe(AlexNetOptions::caffe());
  check_layers(caffe, false);
  CHECK(caffe->learned_layers().size() == 16);

  // The same seed gives the same weights.
  torch::manual_seed(10);
  AlexNet again(AlexNetOptions::paper());
  for (size_t i = 0; i < paper->parameters().size(); ++i) {
    CHECK(at::equal(paper->parameters()[i], again->parameters()[i]));
  }
}

TEST_CASE("Towers on CUDA match grouped execution on the CPU", "[model][cuda]") {
  if (!torch::cuda::is_available()) {
    alexnet::test::skip_without_gpu("LibTorch reports no CUDA device (CPU build or no GPU); scripts/device_check.sh runs this on a GPU");
    return;
  }
  // TF32 would round convolutions to 10-bit mantissas: compare full float32.
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  torch::manual_seed(11);
  AlexNet cpu(AlexNetOptions::caffe().num_classes(10).dropout(0.0));
  const auto x = at::randn({4, 3, 227, 227}) * 50;
  const auto weights = at::randn({4, 10});
  const auto expected = forward_backward(cpu, x, weights);
  std::vector<std::vector<c10::Device>> placements{{c10::Device("cuda:0")}};
  if (torch::cuda::device_count() >= 2) {
    placements.push_back({c10::Device("cuda:0"), c10::Device("cuda:1")});
  } else {
    WARN("skipped the cuda:0 / cuda:1 placement: only one GPU is present");
  }
  for (const auto& devices : placements) {
    INFO("towers on " << devices.front() << " and " << devices.back());
    AlexNet gpu(AlexNetOptions::caffe().num_classes(10).dropout(0.0).devices(devices)
                    .execution(Execution::kTowers));
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < cpu->parameters().size(); ++i) gpu->parameters()[i].copy_(cpu->parameters()[i]);
    }
    check_same(forward_backward(gpu, x.to(devices.front()), weights), expected, 1e-4);
    if (devices.size() == 1) {
      gpu->set_execution(Execution::kGrouped);
      check_same(forward_backward(gpu, x.to(devices.front()), weights), expected, 1e-4);
    }
  }
}

TEST_CASE("The paper's alternatives on CUDA match the CPU", "[model][cuda]") {
  if (!torch::cuda::is_available()) {
    alexnet::test::skip_without_gpu("LibTorch reports no CUDA device (CPU build or no GPU); scripts/device_check.sh runs this on a GPU");
    return;
  }
  alexnet::set_tf32(false);  // full float32 on both sides
  const auto base = AlexNetOptions::caffe().input_size(99).num_classes(10).dropout(0.0);
  const std::vector<std::pair<const char*, AlexNetOptions>> alternatives{
      {"tanh", AlexNetOptions(base).activation(alexnet::Activation::kTanh)},
      {"one tower", AlexNetOptions(base).architecture(alexnet::Architecture::kOneTower)},
      {"no LRN", AlexNetOptions(base).lrn(c10::nullopt)},
      {"pooling 2x2", AlexNetOptions(base).pool_size(2).pool_stride(2)}};
  for (const auto& [name, options] : alternatives) {
    INFO(name);
    torch::manual_seed(13);
    AlexNet cpu(options);
    const auto x = at::randn({4, 3, 99, 99}) * 50;
    const auto weights = at::randn({4, 10});
    const auto expected = forward_backward(cpu, x, weights);
    AlexNet gpu(AlexNetOptions(options).devices({c10::Device("cuda:0")}));
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < cpu->parameters().size(); ++i) gpu->parameters()[i].copy_(cpu->parameters()[i]);
    }
    check_same(forward_backward(gpu, x.to(c10::Device("cuda:0")), weights), expected, 1e-4);
  }
}

namespace {

// Where the GPU tests put the towers: one GPU (two streams), and two GPUs when there are.
std::vector<std::vector<c10::Device>> gpu_placements() {
  std::vector<std::vector<c10::Device>> placements{{c10::Device("cuda:0"), c10::Device("cuda:0")}};
  if (torch::cuda::device_count() >= 2) {
    placements.push_back({c10::Device("cuda:0"), c10::Device("cuda:1")});
  } else {
    WARN("skipped the cuda:0 / cuda:1 placement: only one GPU is present");
  }
  return placements;
}

// Five SGD steps (momentum, weight decay) of a small two-tower network, on `devices`
// in `execution`; the trained parameters on the CPU. The update runs on each device's
// current stream and the next forward's towers on their own: a missing order between
// them reads half-updated weights.
std::vector<at::Tensor> train_steps(const std::vector<c10::Device>& devices, Execution execution) {
  torch::manual_seed(12);
  AlexNet model(AlexNetOptions::caffe().input_size(99).num_classes(10).dropout(0.0).devices(devices)
                    .execution(execution));
  const auto x = (at::randn({8, 3, 99, 99}) * 50).to(devices.front());
  const auto y = (at::arange(8) % 10).to(devices.front());
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(5e-4));
  for (int step = 0; step < 5; ++step) {
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    sgd.step();
  }
  std::vector<at::Tensor> out;
  for (const auto& p : model->parameters()) out.push_back(p.detach().cpu());
  return out;
}

}  // namespace

TEST_CASE("Towers on CUDA train step after step as grouped execution on the CPU", "[model][cuda]") {
  if (!torch::cuda::is_available()) {
    alexnet::test::skip_without_gpu("LibTorch reports no CUDA device (CPU build or no GPU); scripts/device_check.sh runs this on a GPU");
    return;
  }
  alexnet::set_tf32(false);  // full float32 on both sides
  const auto expected = train_steps({c10::Device("cpu")}, Execution::kGrouped);
  for (const auto& devices : gpu_placements()) {
    INFO("towers on " << devices.front() << " and " << devices.back());
    check_same(train_steps(devices, Execution::kTowers), expected, 1e-4);
  }
}

TEST_CASE("The towers' CUDA streams are made once per model, one per tower", "[model][cuda]") {
  if (!torch::cuda::is_available()) {
    alexnet::test::skip_without_gpu("LibTorch reports no CUDA device (CPU build or no GPU); scripts/device_check.sh runs this on a GPU");
    return;
  }
  CHECK(AlexNet(AlexNetOptions::caffe().input_size(67).num_classes(4))->tower_streams().empty());  // the CPU
  for (const auto& devices : gpu_placements()) {
    INFO("towers on " << devices.front() << " and " << devices.back());
    AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(4).devices(devices).execution(Execution::kTowers));
    const auto x = at::randn({2, 3, 67, 67}).to(devices.front());
    model->forward(x).sum().backward();
    const auto first = model->tower_streams();
    REQUIRE(first.size() == 2);
    CHECK(first[0] != first[1]);
    CHECK(first[0].device() == devices[0]);
    CHECK(first[1].device() == devices[1]);
    for (int step = 0; step < 3; ++step) model->forward(x).sum().backward();
    CHECK(model->tower_streams() == first);
  }
}

TEST_CASE("Towers on two GPUs draw different dropout masks", "[model][cuda]") {
  if (torch::cuda::device_count() < 2) {
    alexnet::test::skip_without_gpu("needs two GPUs, one per tower (this machine has " +
                        std::to_string(torch::cuda::device_count()) + ")");
    return;
  }
  alexnet::manual_seed(3);
  AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(4)
                    .devices({c10::Device("cuda:0"), c10::Device("cuda:1")}).execution(Execution::kTowers));
  {
    // Every fc6 unit positive before dropout: the zeros after it are dropout's alone.
    torch::NoGradGuard no_grad;
    for (auto* tower : {model->tower0.get(), model->tower1.get()}) {
      tower->fc6->weight.zero_();
      tower->fc6->bias.fill_(1.0);
    }
  }
  model->train();
  const auto fc6 = model->forward_to(at::randn({4, 3, 67, 67}).to("cuda:0"), Layer::kFc6).cpu();
  const auto dropped0 = fc6.narrow(1, 0, 2048) == 0, dropped1 = fc6.narrow(1, 2048, 2048) == 0;
  const double rate = dropped0.to(at::kDouble).mean().item<double>();
  CHECK(rate > 0.4);
  CHECK(rate < 0.6);
  CHECK_FALSE(at::equal(dropped0, dropped1));
  const double same = (dropped0 == dropped1).to(at::kDouble).mean().item<double>();
  CHECK(same < 0.6);  // independent masks agree on about half the units
}
