#include <alexnet/network/convolution.h>

#include "network/autocast.h"
#include "network/kernels.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>

#include <array>
#include <tuple>

namespace alexnet {
namespace {

// [C_out, C_in / g, kH, kW] -> [C_in, C_out / g, kH, kW], each group's in and out
// channels swapped and the kernel turned by 180 degrees: the kernel whose forward
// convolution, stride 1, is the transposed convolution of the original.
at::Tensor transposed_kernel(const at::Tensor& w, int64_t groups) {
  const int64_t out = w.size(0), in = w.size(1) * groups, kh = w.size(2), kw = w.size(3);
  return w.reshape({groups, out / groups, in / groups, kh, kw})
      .transpose(1, 2)
      .flip({3, 4})
      .reshape({in, out / groups, kh, kw})
      .contiguous(at::MemoryFormat::ChannelsLast);
}

class ConvolutionFunction : public torch::autograd::Function<ConvolutionFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, int64_t padding, int64_t groups) {
    ctx->save_for_backward({input, weight});
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["groups"] = groups;
    return at::conv2d(input, weight, bias, 1, padding, 1, groups);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& input = saved[0];
    const auto& weight = saved[1];
    const int64_t padding = ctx->saved_data["padding"].toInt();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const auto g = grad_outputs[0].to(input.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor grad_input;
    if (ctx->needs_input_grad(0)) {
      const std::array<int64_t, 2> reach{weight.size(2) - 1 - padding, weight.size(3) - 1 - padding};
      grad_input = at::conv2d(g, transposed_kernel(weight, groups), {}, 1, reach, 1, groups);
    }
    const bool weight_grad = ctx->needs_input_grad(1);
    const bool bias_grad = ctx->needs_input_grad(2);  // false for an undefined bias
    at::Tensor grad_weight, grad_bias;
    if (weight_grad || bias_grad) {
      const std::array<int64_t, 1> bias_sizes{weight.size(0)};
      const std::array<int64_t, 2> ones{1, 1}, pad{padding, padding}, zeros{0, 0};
      std::tie(std::ignore, grad_weight, grad_bias) =
          at::convolution_backward(g, input, weight, bias_grad ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef(),
                                   ones, pad, ones, /*transposed=*/false, zeros, groups, {false, weight_grad, bias_grad});
    }
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor()};
  }
};

// Whether the backward pass above serves: a CPU, channels-last (so 4-D), stride-1 convolution
// whose input needs a gradient, padded by at most k - 1 (a transposed padding >= 0).
bool transposed_backward_serves(const at::Tensor& input, const at::Tensor& weight, int64_t stride,
                                int64_t padding) {
  return c10::GradMode::is_enabled() && input.requires_grad() && stride == 1 && weight.dim() == 4 && detail::fused_kernel_takes(input) && weight.device().is_cpu() &&
         detail::kernel_layout(input) == at::MemoryFormat::ChannelsLast && padding >= 0 &&
         padding <= weight.size(2) - 1 && padding <= weight.size(3) - 1;
}

}  // namespace

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, int64_t stride,
                  int64_t padding, int64_t groups) {
  if (!transposed_backward_serves(input, weight, stride, padding)) {
    return at::conv2d(input, weight, bias, stride, padding, 1, groups);
  }
  RECORD_USER_SCOPE("alexnet::conv2d");  // named in LibTorch's profiler
  if (!detail::autocast_enabled(c10::kCPU)) return ConvolutionFunction::apply(input, weight, bias, padding, groups);
  // As autocast's conv2d: the floating-point arguments in its type, a leaf weight's cast
  // cached for the region.
  const auto type = detail::autocast_dtype(c10::kCPU);
  const auto cast = [&](const at::Tensor& t) {
    return t.defined() ? at::autocast::cached_cast(type, t, c10::DeviceType::CPU) : t;
  };
  return ConvolutionFunction::apply(cast(input), cast(weight), cast(bias), padding, groups);
}

}  // namespace alexnet
