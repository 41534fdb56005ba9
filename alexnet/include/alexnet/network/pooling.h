#pragma once
// Overlapping max pooling, Section 3.4 of the paper: windows of z x z (3 x 3) taken
// every s (2) pixels, s < z, so that neighbouring windows overlap.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace alexnet {

/// Max pooling of `input` ([N, C, H, W], NCHW or channels-last) with square windows
/// of `kernel_size` every `stride` pixels, no padding. The output is
/// [N, C, H_out, W_out] in the input's layout, H_out = floor((H - kernel_size) / stride)
/// + 1 (ceil with `ceil_mode`, a last window still starting inside the input), as
/// torch::max_pool2d gives; the gradient goes to the first maximum of each window in
/// row-major order, NaN propagates, as LibTorch's CPU kernel does.
///
/// On the CPU, float, double and bfloat16 run a fused kernel that keeps no indices
/// (LibTorch's stores an int64 per output: 72 MB at conv1 with batch 128): the backward
/// pass finds each window's maximum again from the input, and bfloat16 gradients are
/// summed in float32 where windows overlap. Elsewhere it calls torch::max_pool2d.
/// Throws c10::Error for an input that is not 4-D or smaller than one window.
at::Tensor max_pool2d(const at::Tensor& input, int64_t kernel_size, int64_t stride, bool ceil_mode = false);

/// The side max_pool2d gives from an `in`-wide input: floor((in - kernel) / stride) + 1,
/// or rounded up with `ceil_mode` while the last window starts inside the input (as
/// LibTorch and Caffe do).
int64_t pooled_size(int64_t in, int64_t kernel, int64_t stride, bool ceil_mode);

}  // namespace alexnet
