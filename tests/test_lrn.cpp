#include "helpers.h"

#include <alexnet/network/lrn.h>

#include <catch2/catch.hpp>
#include <torch/cuda.h>
#include <torch/nn/modules/normalization.h>

#include <algorithm>
#include <cmath>

using alexnet::LRNMode;
using alexnet::LRNOptions;
using alexnet::test::relative_error;

namespace {

// The paper's formula (Section 3.3) as plain loops in double, window clipped at the
// channel ends (and at group ends), straight from the definition.
at::Tensor reference_lrn(const at::Tensor& input, const LRNOptions& o, int64_t groups = 1) {
  const auto a = input.to(at::kDouble).contiguous();
  auto b = at::empty_like(a);
  const auto acc = a.accessor<double, 4>();
  auto out = b.accessor<double, 4>();
  const int64_t C = a.size(1), per_group = C / groups;
  const double alpha = o.mode() == LRNMode::kSum ? o.alpha() : o.alpha() / o.size();
  for (int64_t n = 0; n < a.size(0); ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t first = (c / per_group) * per_group;
      const int64_t lo = std::max(first, c - o.size() / 2);
      const int64_t hi = std::min(first + per_group - 1, c + (o.size() - 1) / 2);
      for (int64_t h = 0; h < a.size(2); ++h) {
        for (int64_t w = 0; w < a.size(3); ++w) {
          double sum = 0;
          for (int64_t j = lo; j <= hi; ++j) sum += acc[n][j][h][w] * acc[n][j][h][w];
          out[n][c][h][w] = acc[n][c][h][w] / std::pow(o.k() + alpha * sum, o.beta());
        }
      }
    }
  }
  return b;
}

// Central differences of sum(weights * lrn(x)) against autograd, in double.
template <typename F>
double gradient_error(F lrn, const at::Tensor& x) {
  const auto weights = at::randn_like(x);
  auto input = x.clone().requires_grad_(true);
  (lrn(input) * weights).sum().backward();
  const auto analytic = input.grad();
  auto numeric = at::empty_like(x);
  const double eps = 1e-6;
  auto flat = x.clone();
  auto view = flat.view(-1);
  for (int64_t i = 0; i < view.numel(); ++i) {
    const double saved = view[i].item<double>();
    view[i] = saved + eps;
    const double plus = (lrn(flat) * weights).sum().template item<double>();
    view[i] = saved - eps;
    const double minus = (lrn(flat) * weights).sum().template item<double>();
    view[i] = saved;
    numeric.view(-1)[i] = (plus - minus) / (2 * eps);
  }
  return relative_error(analytic, numeric);
}

}  // namespace

TEST_CASE("LRN matches the paper's formula with the window clipped at both ends", "[lrn]") {
  torch::manual_seed(1);
  // Scaled so that the sum term matters against k (with N(0, 1) input it barely does).
  const auto x = (at::randn({2, 13, 5, 7}) * 40).relu();
  for (const auto& options : {LRNOptions::paper(), LRNOptions::caffe(),
                              LRNOptions().size(3).alpha(0.3).beta(0.6).k(1.5)}) {
    const auto expected = reference_lrn(x, options);
    CHECK(relative_error(alexnet::local_response_norm(x, options), expected) < 1e-5);
    CHECK(relative_error(alexnet::local_response_norm(x.to(at::kDouble), options), expected) < 1e-13);
    CHECK(relative_error(alexnet::detail::local_response_norm_composite(x, options), expected) < 1e-5);
  }
}

TEST_CASE("LRN handles odd channel counts, windows wider than the channels and 5-D input", "[lrn]") {
  torch::manual_seed(2);
  const auto options = LRNOptions().alpha(0.01);
  for (int64_t channels : {1, 2, 3, 7, 97}) {
    const auto x = at::randn({3, channels, 4, 3}) * 10;
    CHECK(relative_error(alexnet::local_response_norm(x, options), reference_lrn(x, options)) < 1e-5);
    // Channels-last, with gradients: 36 positions span two of the kernel's row blocks.
    if (channels == 1) continue;  // one channel is both layouts at once, and runs NCHW
    INFO(channels << " channels, channels-last");
    auto input = x.contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
    const auto out = alexnet::local_response_norm(input, options);
    CHECK(out.is_contiguous(at::MemoryFormat::ChannelsLast));
    CHECK(relative_error(out.contiguous(), reference_lrn(x, options)) < 1e-5);
    const auto weights = at::randn_like(x);
    (out * weights).sum().backward();
    auto reference = x.to(at::kDouble).requires_grad_(true);
    (alexnet::detail::local_response_norm_composite(reference, options) * weights.to(at::kDouble)).sum().backward();
    CHECK(relative_error(input.grad().to(at::kDouble).contiguous(), reference.grad()) < 1e-5);
  }
  // Positions beyond one block of the kernel (256) and a 5-D tensor.
  const auto big = at::randn({1, 9, 17, 19}) * 10;
  CHECK(relative_error(alexnet::local_response_norm(big, options), reference_lrn(big, options)) < 1e-5);
  const auto five = at::randn({2, 9, 3, 4, 5}) * 10;
  const auto as_four = five.reshape({2, 9, 12, 5});
  CHECK(relative_error(alexnet::local_response_norm(five, options).reshape({2, 9, 12, 5}),
                       reference_lrn(as_four, options)) < 1e-5);
}

TEST_CASE("LRN with groups normalises each tower's channels alone", "[lrn]") {
  torch::manual_seed(3);
  const auto x = at::randn({2, 14, 3, 3}) * 30;
  const auto options = LRNOptions::paper();
  const auto expected = reference_lrn(x, options, 2);
  CHECK(relative_error(alexnet::local_response_norm(x, options, 2), expected) < 1e-5);
  CHECK(relative_error(alexnet::detail::local_response_norm_composite(x, options, 2), expected) < 1e-5);
  // Each half on its own is the same as the grouped call.
  const auto halves = at::cat({alexnet::local_response_norm(x.narrow(1, 0, 7), options),
                               alexnet::local_response_norm(x.narrow(1, 7, 7), options)}, 1);
  CHECK(relative_error(alexnet::local_response_norm(x, options, 2), halves) < 1e-7);
  // Without groups the windows cross the boundary and the numbers differ.
  CHECK(relative_error(alexnet::local_response_norm(x, options), expected) > 1e-4);
}

TEST_CASE("LRN agrees with torch::nn::LocalResponseNorm under the alpha mapping", "[lrn]") {
  torch::manual_seed(4);
  const auto x = at::randn({2, 11, 6, 6}) * 20;
  for (int64_t size : {5, 4, 3}) {
    torch::nn::LocalResponseNorm torch_lrn(
        torch::nn::LocalResponseNormOptions(size).alpha(1e-3).beta(0.75).k(2.0));
    const auto expected = torch_lrn(x);
    // LibTorch averages: its alpha is ours times n in the paper's (sum) form.
    const auto sum_form = LRNOptions().size(size).alpha(1e-3 / size).k(2.0);
    const auto average_form = LRNOptions().size(size).alpha(1e-3).k(2.0).mode(LRNMode::kAverage);
    CHECK(relative_error(alexnet::local_response_norm(x, sum_form), expected) < 1e-5);
    CHECK(relative_error(alexnet::local_response_norm(x, average_form), expected) < 1e-5);
  }
}

TEST_CASE("LRN gradients match finite differences in double", "[lrn]") {
  torch::manual_seed(5);
  const auto x = at::randn({2, 7, 3, 4}, at::kDouble) * 3;
  for (const auto& options : {LRNOptions().alpha(0.05), LRNOptions().size(4).alpha(0.2).beta(0.6).k(1.0),
                              LRNOptions::caffe().alpha(0.1)}) {
    CHECK(gradient_error([&](const at::Tensor& t) { return alexnet::local_response_norm(t, options); }, x) <
          1e-8);
    CHECK(gradient_error([&](const at::Tensor& t) { return alexnet::local_response_norm(t, options, 7); },
                         x) < 1e-8);
    CHECK(gradient_error(
              [&](const at::Tensor& t) { return alexnet::detail::local_response_norm_composite(t, options); },
              x) < 1e-8);
  }
}

TEST_CASE("LRN float gradients agree with the composite form", "[lrn]") {
  torch::manual_seed(6);
  const auto options = LRNOptions::paper();
  const auto x = (at::randn({4, 96, 13, 13}) * 30).relu();
  const auto weights = at::randn_like(x);
  auto a = x.clone().requires_grad_(true);
  auto b = x.to(at::kDouble).requires_grad_(true);
  (alexnet::local_response_norm(a, options, 2) * weights).sum().backward();
  (alexnet::detail::local_response_norm_composite(b, options, 2) * weights.to(at::kDouble)).sum().backward();
  CHECK(relative_error(a.grad(), b.grad()) < 1e-5);
}

TEST_CASE("LRN rejects bad arguments with a message naming the value", "[lrn]") {
  const auto options = LRNOptions::paper();
  CHECK_THROWS_WITH(alexnet::local_response_norm(at::ones({5}), options),
                    Catch::Contains("at least 2 dimensions") && Catch::Contains("got 1"));
  CHECK_THROWS_WITH(alexnet::local_response_norm(at::ones({1, 7, 2, 2}), options, 2),
                    Catch::Contains("7 channels do not split into 2 groups"));
  CHECK_THROWS_WITH(alexnet::local_response_norm(at::ones({1, 4, 2, 2}), LRNOptions().size(0)),
                    Catch::Contains("window size must be at least 1, got 0"));
  CHECK_THROWS_WITH(alexnet::LRN(LRNOptions(), 0), Catch::Contains("groups must be at least 1, got 0"));
}

TEST_CASE("LRN module prints its options and keeps its groups", "[lrn]") {
  alexnet::LRN lrn(LRNOptions::caffe(), 2);
  std::ostringstream text;
  text << *lrn;
  CHECK(text.str() == "alexnet::LRN(size=5, alpha=0.0001, beta=0.75, k=1, mode=average, groups=2)");
  const auto x = at::randn({1, 6, 2, 2}) * 50;
  CHECK(relative_error(lrn(x), reference_lrn(x, LRNOptions::caffe(), 2)) < 1e-5);
}

// Under float16 autocast conv1's ReLU outputs reach the hundreds: their squares overflow
// float16 (65504), and a half-precision window sum would turn the unit's output into 0
// with no NaN for the loss scaler to see. Half and bfloat16 are normalised in float32.
namespace {
void check_reduced_precision(const c10::Device& device) {
  torch::manual_seed(14);
  const auto options = LRNOptions::paper();
  auto x = (at::randn({2, 96, 5, 5}) * 200).relu_();
  x[0][10][2][2] = 300.0;  // a square of 90,000 alone overflows float16
  const auto expected = reference_lrn(x, options, 2);
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    INFO("dtype " << dtype << " on " << device);
    auto input = x.to(device).to(dtype).requires_grad_(true);
    const auto out = alexnet::local_response_norm(input, options, 2);
    CHECK(out.scalar_type() == dtype);
    CHECK(out.isfinite().all().item<bool>());
    CHECK(out[0][10][2][2].item<double>() > 0);
    const double tolerance = dtype == at::kHalf ? 2e-3 : 1e-2;  // the input's own rounding
    CHECK(relative_error(out.to(at::kDouble).cpu(), reference_lrn(input.detach().to(at::kDouble).cpu(), options, 2)) <
          tolerance);
    CHECK(relative_error(out.to(at::kDouble).cpu(), expected) < 2 * tolerance);
    out.sum().backward();
    CHECK(input.grad().scalar_type() == dtype);
    CHECK(input.grad().isfinite().all().item<bool>());
  }
}
}  // namespace

TEST_CASE("LRN of float16 and bfloat16 accumulates in float32: large activations survive", "[lrn]") {
  check_reduced_precision(c10::Device("cpu"));
}

TEST_CASE("LRN of float16 and bfloat16 accumulates in float32 on CUDA", "[lrn][cuda]") {
  if (!torch::cuda::is_available()) {
    alexnet::test::skip_without_gpu("no CUDA device here (LibTorch built without CUDA, or no GPU)");
    return;
  }
  check_reduced_precision(c10::Device("cuda:0"));
}

// The fused CPU kernels for channels-last input ([N, H, W, C] in memory, what oneDNN's
// convolutions produce) and for bfloat16 (arithmetic in float32): the same numbers as
// the definition, the layout kept, and gradients that agree with the composite form
// in double.
TEST_CASE("LRN of channels-last and bfloat16 input matches the formula and keeps the layout", "[lrn]") {
  torch::manual_seed(15);
  for (const int64_t size : {5, 4}) {
    for (const int64_t groups : {1, 2}) {
      for (const auto dtype : {at::kFloat, at::kBFloat16}) {
        for (const bool channels_last : {false, true}) {
          INFO("size " << size << ", groups " << groups << ", " << dtype << (channels_last ? ", channels-last" : ""));
          const auto options = LRNOptions::paper().size(size);
          const auto x = (at::randn({3, 12, 5, 7}) * 40).relu_();
          auto input = x.to(dtype);
          if (channels_last) input = input.contiguous(at::MemoryFormat::ChannelsLast);
          input.requires_grad_(true);
          const auto out = alexnet::local_response_norm(input, options, groups);
          CHECK(out.scalar_type() == dtype);
          CHECK(out.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
          // bfloat16: the output's own rounding (8 bits of mantissa), no more.
          const double tolerance = dtype == at::kBFloat16 ? 4e-3 : 1e-6;
          const auto rounded_input = input.detach().to(at::kDouble).contiguous();
          CHECK(relative_error(out.to(at::kDouble).contiguous(), reference_lrn(rounded_input, options, groups)) <
                tolerance);

          const auto weights = at::randn_like(x);
          (out * weights.to(dtype)).sum().backward();
          auto reference = rounded_input.clone().requires_grad_(true);
          (alexnet::detail::local_response_norm_composite(reference, options, groups) *
           weights.to(dtype).to(at::kDouble))
              .sum()
              .backward();
          CHECK(input.grad().scalar_type() == dtype);
          CHECK(relative_error(input.grad().to(at::kDouble).contiguous(), reference.grad()) <
                (dtype == at::kBFloat16 ? 1e-2 : 1e-5));
        }
      }
    }
  }
}

// bfloat16 channels-last (what bf16 training runs) computes in float32 and rounds
// once: a float32 result a few ulp from exact rounds as the exact formula's for all but
// the few elements next to a bfloat16 midpoint, each at most one bfloat16 step away.
TEST_CASE("LRN of bfloat16 channels-last rounds as the exact formula does", "[lrn]") {
  torch::manual_seed(16);
  const auto options = LRNOptions::paper();
  // Spread over the range activations take: s from k = 2 to ~2e4.
  const auto x = (at::randn({8, 96, 13, 13}) * at::rand({8, 96, 13, 13}).mul(6).exp2()).relu_().to(at::kBFloat16);
  const auto input = x.contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
  const auto out = alexnet::local_response_norm(input, options, 2);
  const auto exact = reference_lrn(x.to(at::kDouble), options, 2).to(at::kBFloat16);
  const auto mismatched = out.ne(exact).sum().item<int64_t>();
  INFO(mismatched << " of " << out.numel() << " elements differ from the exactly rounded value");
  CHECK(mismatched <= out.numel() / 2000);
  // Where they differ, by one bfloat16 step (2^-7 relative at most).
  CHECK(((out.to(at::kDouble) - exact.to(at::kDouble)).abs() <= exact.to(at::kDouble).abs() * 0x1p-7).all().item<bool>());

  // Gradients: against the composite form in double,
  // from the same bfloat16 input and output gradient, to bfloat16's rounding.
  const auto weights = at::randn_like(out);
  (out * weights).sum().backward();
  auto reference = x.to(at::kDouble).requires_grad_(true);
  (alexnet::detail::local_response_norm_composite(reference, options, 2) * weights.to(at::kDouble)).sum().backward();
  CHECK(relative_error(input.grad().to(at::kDouble).contiguous(), reference.grad()) < 4e-3);
}

// Squares that overflow float, a NaN, huge finite values and (k = 0) windows of zeros:
// the NCHW kernel (its sliding sums would carry inf - inf, or a huge square's rounding,
// past the window) and the channels-last one give the formula's infinities, zeros and
// NaNs alike, in the forward and backward passes.
TEST_CASE("LRN keeps overflow, NaN and zero windows exact in both layouts", "[lrn]") {
  torch::manual_seed(17);
  for (const double k : {2.0, 0.0}) {
    INFO("k = " << k);
    const auto options = LRNOptions::paper().k(k);
    auto x = (at::randn({2, 64, 3, 3}) * 30).relu_();
    x[0][3][0][0] = 1e20;                  // its square overflows float: s = inf
    x[0][40][1][2] = 3e12;                 // s = alpha * 9e24 > 2^64 (finite)
    x[1][20][2][2] = std::nan("");         // a NaN window
    x[1].narrow(0, 32, 32).zero_();        // all-zero windows: s = k (0 when k = 0)
    const auto b = x.to(at::kBFloat16);
    auto nchw = b.clone().requires_grad_(true);
    auto last = b.contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
    const auto expected = alexnet::local_response_norm(nchw, options, 2);
    const auto out = alexnet::local_response_norm(last, options, 2);
    CHECK(out.is_contiguous(at::MemoryFormat::ChannelsLast));
    CHECK(torch::allclose(out.to(at::kFloat), expected.to(at::kFloat), 1e-2, 0, /*equal_nan=*/true));
    // Each layout against the formula in double on the same bf16 values: NaN exactly
    // where the formula gives NaN (a NaN in the window; 0 / 0 where k = 0 and the window
    // is all zeros), and elsewhere within bf16's rounding. Where float's square
    // overflows (s = inf) the output is 0; the formula in double gives at most 1e-7 there.
    const auto formula = reference_lrn(b, options, 2);
    for (const auto& layout : {expected, out}) {
      const auto got = layout.to(at::kDouble);
      CHECK(torch::equal(got.isnan(), formula.isnan()));
      const auto defined = formula.isnan().logical_not();
      CHECK(torch::allclose(got.masked_select(defined), formula.masked_select(defined), 1e-2, 1e-6));
    }
    CHECK(formula.isnan().sum().item<int64_t>() > 0);
    CHECK(expected[0][3][0][0].item<float>() == 0.0f);
    const auto g = at::randn_like(expected);
    expected.backward(g);
    out.backward(g);
    CHECK(torch::allclose(last.grad().to(at::kFloat), nchw.grad().to(at::kFloat), 1e-2, 1e-3, /*equal_nan=*/true));
  }
}

// Large activations beside near-zero ones: the NCHW kernel's sliding window sum would
// keep the rounding of a large square after it leaves the window (at 3,000, an error of
// ~1e-4 in the neighbours' outputs); such blocks are summed window by window.
TEST_CASE("LRN in float32 NCHW stays exact beside large activations", "[lrn]") {
  torch::manual_seed(18);
  const auto options = LRNOptions::paper();
  for (const double scale : {100.0, 3000.0, 1e6}) {
    INFO("activations of " << scale);
    const auto x = (at::rand({2, 96, 8, 8}) < 0.3).to(at::kFloat) * scale + at::rand({2, 96, 8, 8}) * 0.01;
    auto input = x.clone().requires_grad_(true);
    const auto out = alexnet::local_response_norm(input, options, 2);
    const auto expected = reference_lrn(x.to(at::kDouble), options, 2);
    CHECK(((out.to(at::kDouble) - expected).abs() / expected.abs()).max().item<double>() < 4e-6);
    const auto weights = at::randn_like(x);
    (out * weights).sum().backward();
    auto reference = x.to(at::kDouble).requires_grad_(true);
    (alexnet::detail::local_response_norm_composite(reference, options, 2) * weights.to(at::kDouble)).sum().backward();
    CHECK(relative_error(input.grad(), reference.grad()) < 1e-5);
  }
}
