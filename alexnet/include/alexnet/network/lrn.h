#pragma once

// Local response normalisation, Section 3.3 of the paper:
//
//   b[i] = a[i] / (k + alpha * SUM_{j = max(0, i - n/2)}^{min(N - 1, i + (n - 1)/2)} a[j]^2)^beta
//
// The paper's alpha multiplies the *sum* over the window (LRNMode::kSum). LibTorch's
// `LocalResponseNorm`, Caffe and ONNX divide alpha by n (LRNMode::kAverage), so
// `kSum` with alpha equals their form with alpha * n. For odd n (the paper's 5) the
// window is centred; for even n it reaches n/2 channels back and (n - 1)/2 forward,
// as LibTorch's and Caffe's do.
//
// On the CPU, float, double and bfloat16 run one fused pass over the channels, NCHW
// (a sliding window sum) or channels-last (shifted sums over each pixel's channels),
// the output in the input's layout; the backward pass recomputes the scale from the
// input. bfloat16 (autocast) is read and written as bfloat16, its arithmetic in
// float32. Other devices and dtypes use a composite of ATen operators with the same
// numbers, half and bfloat16 normalised in float32 and returned in their own type.

#include <alexnet/network/names.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

namespace alexnet {

/// How alpha is applied to the sum of squares over the window.
enum class LRNMode {
  kSum,      ///< alpha * sum (the paper's formula).
  kAverage,  ///< (alpha / n) * sum (LibTorch, Caffe, ONNX).
};

struct LRNOptions {
  /// The paper's constants (Section 3.3): n = 5, alpha = 1e-4, beta = 0.75, k = 2.
  LRNOptions() = default;

  /// The paper's LRN (Section 3.3).
  static LRNOptions paper();
  /// Caffe's `bvlc_alexnet` LRN: k = 1, alpha = 1e-4 averaged over the window.
  static LRNOptions caffe();

  /// Number of adjacent channels in the window (the paper's n).
  TORCH_ARG(int64_t, size) = 5;
  /// Scale of the sum of squares (the paper's alpha).
  TORCH_ARG(double, alpha) = 1e-4;
  /// Exponent (the paper's beta).
  TORCH_ARG(double, beta) = 0.75;
  /// Additive constant (the paper's k).
  TORCH_ARG(double, k) = 2.0;
  /// Whether alpha multiplies the sum (paper) or the mean (Caffe, LibTorch).
  TORCH_ARG(LRNMode, mode) = LRNMode::kSum;
};

/// Normalises `input` ([N, C, ...]) across channels. With `groups` > 1 the channels
/// split into that many equal groups and no window crosses a group boundary: this
/// is how one grouped tensor holds the paper's two towers, each normalised alone.
torch::Tensor local_response_norm(const torch::Tensor& input, const LRNOptions& options,
                                  int64_t groups = 1);

namespace detail {
/// The composite ATen form used off the CPU; exposed for tests.
torch::Tensor local_response_norm_composite(const torch::Tensor& input,
                                            const LRNOptions& options, int64_t groups = 1);
}  // namespace detail

/// Module form of `local_response_norm`.
class LRNImpl : public torch::nn::Cloneable<LRNImpl> {
 public:
  explicit LRNImpl(LRNOptions options = {}, int64_t groups = 1);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& input);

  LRNOptions options;
  int64_t groups;
};
TORCH_MODULE(LRN);

template <>
const std::vector<std::pair<std::string, LRNMode>>& names<LRNMode>();  ///< sum, average

}  // namespace alexnet
