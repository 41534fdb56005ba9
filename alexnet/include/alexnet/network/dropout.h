#pragma once
// Dropout, Section 4.2 of the paper: in training each hidden unit's output is set to
// zero with probability p; the paper halves the outputs at test time, this (as
// LibTorch, Caffe and torchvision) scales the kept ones by 1 / (1 - p) in training
// instead ("inverted" dropout), so evaluation needs no scaling.

#include <ATen/core/Tensor.h>

namespace alexnet {

/// `input` with each element zeroed with probability `p` and the others multiplied by
/// 1 / (1 - p) when `train`; `input` itself otherwise or when p = 0. Any shape and
/// layout; the output has the input's. As torch::dropout: the mask multiplies, so a
/// NaN or infinite input stays NaN where dropped; p = 1 multiplies by zero.
///
/// On the CPU, float, double and bfloat16 run one fused pass in parallel: element i is
/// kept when a hash of i and a 64-bit key is below (1 - p) 2^32 (probabilities resolve
/// to 2^-32). The key is one draw from LibTorch's default CPU generator, so
/// torch::manual_seed (or alexnet::manual_seed) fixes the masks; the backward pass
/// recomputes the mask from it, nothing is stored. LibTorch's own CPU bernoulli_ draws
/// element by element from one Mersenne Twister on one thread (7 ms per 128 x 4096
/// mask; this takes a fraction of a millisecond). Other devices and dtypes call
/// torch::dropout, with the device's generator.
/// Throws c10::Error for p outside [0, 1].
at::Tensor dropout(const at::Tensor& input, double p, bool train);

}  // namespace alexnet
