#include "helpers.h"

#include <alexnet/network/convolution.h>
#include <alexnet/network/precision.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <catch2/catch.hpp>

#include <string>
#include <vector>

using alexnet::test::relative_error;

namespace {

struct Grads {
  at::Tensor out, input, weight, bias;
};

// out = conv(x, w, b) and the gradients of sum(out * g), through `conv`.
template <typename F>
Grads run(const F& conv, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& g) {
  auto xi = x.detach().clone().requires_grad_(true);
  auto wi = w.detach().clone().requires_grad_(true);
  auto bi = b.detach().clone().requires_grad_(true);
  auto out = conv(xi, wi, bi);
  out.backward(g.to(out.scalar_type()));
  return {out.detach(), xi.grad(), wi.grad(), bi.grad()};
}

std::string grad_fn_name(const at::Tensor& t) { return t.grad_fn() ? t.grad_fn()->name() : "none"; }

}  // namespace

TEST_CASE("alexnet::conv2d's output and gradients are the convolution's, through its transposed backward pass",
          "[convolution]") {
  torch::manual_seed(5);
  struct Case {
    int64_t in, out, kh, kw, padding, groups;
  };
  // conv2's and conv3-conv5's shapes, small; a "valid" one; a kernel wider than tall.
  for (const auto c : {Case{8, 12, 5, 5, 2, 2}, Case{8, 12, 3, 3, 1, 1}, Case{6, 4, 3, 3, 0, 2},
                       Case{4, 6, 3, 5, 1, 1}}) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      INFO("in " << c.in << ", out " << c.out << ", kernel " << c.kh << "x" << c.kw << ", padding " << c.padding
                 << ", groups " << c.groups << ", " << dtype);
      const auto x = at::randn({3, c.in, 9, 11}).to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
      const auto w = (at::randn({c.out, c.in / c.groups, c.kh, c.kw}) * 0.2).to(dtype);
      const auto b = at::randn({c.out}).to(dtype);
      const auto h = 9 + 2 * c.padding - c.kh + 1, wd = 11 + 2 * c.padding - c.kw + 1;
      const auto g = at::randn({3, c.out, h, wd}).contiguous(at::MemoryFormat::ChannelsLast);
      const auto ours = run(
          [&](const at::Tensor& xi, const at::Tensor& wi, const at::Tensor& bi) {
            auto y = alexnet::conv2d(xi, wi, bi, 1, c.padding, c.groups);
            CHECK(grad_fn_name(y).find("ConvolutionFunction") != std::string::npos);  // the transposed route
            return y;
          },
          x, w, b, g);
      // The same numbers in double, NCHW, through LibTorch's own backward pass.
      const auto ref = run(
          [&](const at::Tensor& xi, const at::Tensor& wi, const at::Tensor& bi) {
            return at::conv2d(xi, wi, bi, 1, c.padding, 1, c.groups);
          },
          x.to(at::kDouble).contiguous(), w.to(at::kDouble), b.to(at::kDouble), g.to(at::kDouble).contiguous());
      // float32: rounding alone; bfloat16: outputs and gradients rounded to 8 bits.
      const double tolerance = dtype == at::kFloat ? 1e-5 : 1e-2;
      CHECK(relative_error(ours.out, ref.out) < tolerance);
      CHECK(relative_error(ours.input, ref.input) < tolerance);
      CHECK(relative_error(ours.weight, ref.weight) < tolerance);
      CHECK(relative_error(ours.bias, ref.bias) < tolerance);
      CHECK(ours.out.scalar_type() == dtype);
      CHECK(ours.input.sizes() == x.sizes());
      CHECK(ours.out.is_contiguous(at::MemoryFormat::ChannelsLast));
      CHECK(ours.input.is_contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
}

TEST_CASE("alexnet::conv2d casts as autocast does and keeps LibTorch's path where the transposed one does not serve",
          "[convolution][precision]") {
  torch::manual_seed(6);
  const auto x = at::randn({2, 8, 7, 7}).contiguous(at::MemoryFormat::ChannelsLast);
  const auto w = at::randn({16, 4, 3, 3}) * 0.2;
  const auto b = at::randn({16});
  const auto g = at::randn({2, 16, 7, 7});
  const auto plain = [](int64_t stride, int64_t padding) {
    return [=](const at::Tensor& xi, const at::Tensor& wi, const at::Tensor& bi) {
      return at::conv2d(xi, wi, bi, stride, padding, 1, 2);
    };
  };
  const auto ours = [](int64_t stride, int64_t padding) {
    return [=](const at::Tensor& xi, const at::Tensor& wi, const at::Tensor& bi) {
      return alexnet::conv2d(xi, wi, bi, stride, padding, 2);
    };
  };
  SECTION("under bf16 autocast: a bf16 output, float32 gradients, the numbers of autocast's own convolution") {
    const alexnet::AutocastGuard guard(c10::kCPU, alexnet::Precision::kBf16);
    const auto a = run(ours(1, 1), x, w, b, g);
    const auto r = run(plain(1, 1), x, w, b, g);
    CHECK(a.out.scalar_type() == at::kBFloat16);
    CHECK(a.input.scalar_type() == at::kFloat);
    CHECK(a.weight.scalar_type() == at::kFloat);
    CHECK(a.bias.scalar_type() == at::kFloat);
    CHECK(at::equal(a.out, r.out));  // the forward pass is the same oneDNN call
    CHECK(relative_error(a.input, r.input) < 1e-2);
    CHECK(relative_error(a.weight, r.weight) < 1e-2);
    CHECK(relative_error(a.bias, r.bias) < 1e-2);
  }
  SECTION("NCHW, stride 2, padding beyond k - 1, no gradient: torch::conv2d itself, bitwise") {
    auto check_same = [&](const at::Tensor& xi, int64_t stride, int64_t padding) {
      INFO("stride " << stride << ", padding " << padding << (xi.is_contiguous() ? ", NCHW" : ", channels-last"));
      const auto gi = at::randn(at::conv2d(xi, w, b, stride, padding, 1, 2).sizes());
      const auto a = run(ours(stride, padding), xi, w, b, gi);
      const auto r = run(plain(stride, padding), xi, w, b, gi);
      CHECK(at::equal(a.out, r.out));
      CHECK(at::equal(a.input, r.input));
      CHECK(at::equal(a.weight, r.weight));
      auto probe = xi.detach().clone().requires_grad_(true);
      CHECK(grad_fn_name(alexnet::conv2d(probe, w, b, stride, padding, 2)) == "ConvolutionBackward0");
    };
    check_same(x.contiguous(), 1, 1);
    check_same(x, 2, 1);
    check_same(x, 1, 3);
    // The input needs no gradient (conv1's images): LibTorch's path.
    CHECK(grad_fn_name(alexnet::conv2d(x, w.detach().clone().requires_grad_(true), b, 1, 1, 2)) ==
          "ConvolutionBackward0");
    const at::NoGradGuard no_grad;
    CHECK(grad_fn_name(alexnet::conv2d(x.detach().clone().requires_grad_(true), w, b, 1, 1, 2)) == "none");
  }
}
