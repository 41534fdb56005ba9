#include "helpers.h"

#include <alexnet/network/pooling.h>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <limits>
#include <utility>
#include <vector>

using alexnet::test::relative_error;

namespace {

// LibTorch's max pooling of the same input, in double (exact for values and for sums
// of at most four gradients), as the reference.
std::pair<at::Tensor, at::Tensor> reference(const at::Tensor& x, const at::Tensor& g, bool ceil) {
  auto input = x.detach().to(at::kDouble).contiguous().requires_grad_(true);
  auto out = at::max_pool2d(input, {3, 3}, {2, 2}, {0, 0}, {1, 1}, ceil);
  out.backward(g.to(at::kDouble).contiguous());
  return {out.detach(), input.grad()};
}

}  // namespace

TEST_CASE("Overlapping max pooling matches LibTorch's: values, layout, gradients, ties and ceil mode", "[pooling]") {
  torch::manual_seed(21);
  for (const auto side : {55, 27, 13, 8, 3}) {
    for (const bool ceil : {false, true}) {
      for (const auto dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
        for (const bool channels_last : {false, true}) {
          INFO("side " << side << (ceil ? ", ceil" : "") << ", " << dtype << (channels_last ? ", channels-last" : ""));
          // Small whole numbers: windows hold many ties, which must go to the first.
          auto x = at::randint(-4, 5, {2, 6, side, side + 1}).to(dtype);
          x[0][1].fill_(-std::numeric_limits<double>::infinity());  // windows of -inf only
          if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
          auto input = x.clone().requires_grad_(true);
          const auto out = alexnet::max_pool2d(input, 3, 2, ceil);
          const auto g = at::randn(out.sizes()).to(dtype);
          out.backward(g);
          const auto [expected, expected_grad] = reference(x, g, ceil);
          CHECK(out.sizes() == expected.sizes());
          CHECK(out.scalar_type() == dtype);
          CHECK(out.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
          CHECK(at::equal(out.to(at::kDouble).contiguous(), expected));
          // bfloat16: our float32 sums rounded once; LibTorch's reference sums in double.
          CHECK(relative_error(input.grad().to(at::kDouble).contiguous(), expected_grad) <
                (dtype == at::kBFloat16 ? 4e-3 : 1e-7));
        }
      }
    }
  }
}

TEST_CASE("Overlapping max pooling propagates NaN and routes its gradient as LibTorch does", "[pooling]") {
  for (const bool channels_last : {false, true}) {
    INFO((channels_last ? "channels-last" : "NCHW"));
    auto x = at::zeros({1, 2, 5, 5});
    x[0][0][1][1] = std::numeric_limits<float>::quiet_NaN();
    x[0][0][1][2] = std::numeric_limits<float>::quiet_NaN();  // the last NaN takes the gradient
    x[0][1][0][0] = 7;
    if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    auto input = x.clone().requires_grad_(true);
    const auto out = alexnet::max_pool2d(input, 3, 2);
    const auto g = at::arange(1, 9, at::kFloat).view({1, 2, 2, 2});
    out.backward(g);
    auto ref_input = x.contiguous().clone().requires_grad_(true);
    const auto ref = at::max_pool2d(ref_input, {3, 3}, {2, 2});
    ref.backward(g);
    CHECK(out.isnan().equal(ref.isnan()));
    CHECK(at::equal(out.nan_to_num(), ref.nan_to_num()));
    CHECK(at::equal(input.grad().contiguous(), ref_input.grad()));
  }
}

// Windows other than the paper's: non-overlapping, stride 1 (each pixel in up to nine
// windows), and strides wider than the window (rows and columns no window covers get
// a zero gradient), with ties, in both layouts; channel counts that are not a multiple
// of any vector width.
TEST_CASE("Max pooling with other window sizes and strides matches LibTorch's", "[pooling]") {
  torch::manual_seed(22);
  for (const auto& [kernel, stride] : std::vector<std::pair<int64_t, int64_t>>{{2, 2}, {3, 1}, {2, 3}, {1, 2}, {4, 3}}) {
    for (const bool ceil : {false, true}) {
      for (const auto dtype : {at::kFloat, at::kBFloat16}) {
        for (const bool channels_last : {false, true}) {
          INFO("kernel " << kernel << ", stride " << stride << (ceil ? ", ceil" : "") << ", " << dtype
                         << (channels_last ? ", channels-last" : ""));
          auto x = at::randint(-3, 4, {2, 19, 11, 14}).to(dtype);
          if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
          auto input = x.clone().requires_grad_(true);
          const auto out = alexnet::max_pool2d(input, kernel, stride, ceil);
          const auto g = at::randn(out.sizes()).to(dtype);
          out.backward(g);
          auto ref_input = x.detach().to(at::kDouble).contiguous().requires_grad_(true);
          const auto ref = at::max_pool2d(ref_input, {kernel, kernel}, {stride, stride}, {0, 0}, {1, 1}, ceil);
          ref.backward(g.to(at::kDouble).contiguous());
          REQUIRE(out.sizes() == ref.sizes());
          CHECK(at::equal(out.to(at::kDouble).contiguous(), ref));
          CHECK(relative_error(input.grad().to(at::kDouble).contiguous(), ref_input.grad()) <
                (dtype == at::kBFloat16 ? 4e-3 : 1e-7));
        }
      }
    }
  }
}

TEST_CASE("Overlapping max pooling rejects inputs it cannot pool with a message naming them", "[pooling]") {
  CHECK_THROWS_WITH(alexnet::max_pool2d(at::ones({2, 5, 5}), 3, 2),
                    Catch::Contains("expected [N, C, H, W], got 3 dimensions"));
  CHECK_THROWS_WITH(alexnet::max_pool2d(at::ones({1, 1, 2, 9}), 3, 2),
                    Catch::Contains("input of 2x9 is smaller than one 3x3 window"));
  CHECK_THROWS_WITH(alexnet::max_pool2d(at::ones({1, 1, 4, 4}), 3, 0), Catch::Contains("got 3 and 0"));
}
