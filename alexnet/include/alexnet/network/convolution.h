#pragma once
// Convolution whose backward pass suits oneDNN on the CPU (Section 3.5's conv2-conv5:
// stride 1, "same" padding).

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace alexnet {

/// torch::conv2d(input, weight, bias, stride, padding, /*dilation=*/1, groups): input
/// [N, C_in, H, W], weight [C_out, C_in / groups, kH, kW], bias [C_out] or undefined;
/// the output [N, C_out, H_out, W_out] in the input's layout, with the same numbers.
/// Under CPU autocast, input, weight and bias are cast as autocast casts them.
///
/// The difference is the input's gradient on the CPU for a channels-last input with
/// stride 1 and padding at most k - 1: it is the forward convolution of the output's
/// gradient with the kernel flipped and its in and out channels swapped, padding
/// k - 1 - padding, which oneDNN's forward kernels run faster than its backward-data
/// ones (in bfloat16, conv3-conv5 of a batch of 128: 42 against 52, 32 against 43, 23
/// against 29 ms on a 2-core AVX512-BF16 CPU; NCHW float32 gains nothing and keeps
/// LibTorch's path). The weight's and bias's gradients are LibTorch's. Elsewhere
/// (another device, NCHW, stride > 1, no gradient) it is torch::conv2d itself.
at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, int64_t stride,
                  int64_t padding, int64_t groups = 1);

}  // namespace alexnet
