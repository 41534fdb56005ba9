#include "helpers.h"

#include <alexnet/model.h>
#include <alexnet/precision.h>

#include <catch2/catch.hpp>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>

#include <cmath>
#include <limits>

using namespace alexnet;
using alexnet::test::message_of;

TEST_CASE("the loss scaler unscales, skips non-finite steps and adapts its scale", "[precision]") {
  LossScalerOptions options;
  options.init_scale = 1024;
  options.growth_interval = 3;
  LossScaler scaler(true, options);
  CHECK(scaler.scale(torch::tensor(0.5)).item<double>() == 512);

  auto g = torch::full({4}, 2048.0);
  CHECK(scaler.unscale_and_update({g, torch::Tensor()}));
  CHECK(torch::equal(g, torch::full({4}, 2.0)));
  CHECK(scaler.scale() == 1024);

  // An overflow: the step is refused and the scale halves; the count starts again.
  auto bad = torch::tensor({1.0, std::numeric_limits<double>::infinity()});
  CHECK_FALSE(scaler.unscale_and_update({torch::ones({2}), bad}));
  CHECK(scaler.scale() == 512);
  auto nan = torch::tensor({std::nan("")});
  CHECK_FALSE(scaler.unscale_and_update({nan}));
  CHECK(scaler.scale() == 256);

  // Three good steps in a row double it.
  for (int i = 0; i < 2; ++i) CHECK(scaler.unscale_and_update({torch::ones({2})}));
  CHECK(scaler.scale() == 256);
  CHECK(scaler.unscale_and_update({torch::ones({2})}));
  CHECK(scaler.scale() == 512);

  LossScaler restored(true, options);
  CHECK(scaler.unscale_and_update({torch::ones({2})}));
  restored.load_state(scaler.state());
  CHECK(restored.state() == scaler.state());

  LossScaler off;
  auto kept = torch::full({2}, 3.0);
  CHECK(off.unscale_and_update({kept}));
  CHECK(torch::equal(kept, torch::full({2}, 3.0)));
  CHECK(off.scale(torch::tensor(2.0)).item<double>() == 2);

  options.backoff_factor = 1.5;
  CHECK(message_of([&] { LossScaler(true, options); }) ==
        "loss scaler: the scale must be positive, growth > 1, backoff in (0, 1)");
  CHECK(message_of([] { precision_from_string("fp8"); }) ==
        "unknown precision 'fp8' (expected one of: fp32, bf16, fp16)");
}

TEST_CASE("bf16 autocast runs the network on the CPU and ends with its scope", "[precision]") {
  torch::manual_seed(1);
  AlexNet model(AlexNetOptions::paper().num_classes(10).input_size(67));
  model->eval();
  const auto x = torch::randn({2, 3, 67, 67});
  const auto reference = model->forward(x);
  torch::Tensor mixed;
  {
    const AutocastGuard guard(c10::kCPU, Precision::kBf16);
    mixed = model->forward(x);
  }
  CHECK(mixed.scalar_type() == torch::kBFloat16);
  CHECK(model->forward(x).scalar_type() == torch::kFloat);  // autocast is off again
  const auto error = test::relative_error(mixed.to(torch::kFloat), reference);
  WARN("bf16 autocast logits vs float32: relative error " << error);
  CHECK(error < 0.05);
  CHECK(message_of([] { AutocastGuard(c10::kCPU, Precision::kFp16); }) ==
        "--precision fp16 needs a CUDA device; on CPUs use bf16");
}

TEST_CASE("an AMP step on CUDA gives a finite loss and finite gradients", "[precision][cuda]") {
  if (!torch::cuda::is_available()) {
    test::skip("no CUDA device here (LibTorch built without CUDA, or no GPU)");
    return;
  }
  for (const auto precision : {Precision::kBf16, Precision::kFp16}) {
    INFO(to_string(precision));
    torch::manual_seed(2);
    AlexNet model(AlexNetOptions::paper().devices({c10::Device("cuda:0")}));
    const auto x = torch::randn({16, 3, 227, 227}, torch::kCUDA);
    const auto y = torch::randint(0, 1000, {16}, torch::TensorOptions(torch::kLong).device(torch::kCUDA));
    LossScaler scaler(precision == Precision::kFp16);
    torch::Tensor logits;
    {
      const AutocastGuard guard(c10::kCUDA, precision);
      logits = model->forward(x);
    }
    CHECK(logits.scalar_type() == (precision == Precision::kBf16 ? torch::kBFloat16 : torch::kHalf));
    const auto loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat), y);
    CHECK(std::isfinite(loss.item<double>()));
    scaler.scale(loss).backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : model->parameters()) grads.push_back(p.grad());
    CHECK(scaler.unscale_and_update(grads));
    for (const auto& g : grads) CHECK(g.isfinite().all().item<bool>());
  }
}
