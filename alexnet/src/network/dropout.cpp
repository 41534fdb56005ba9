#include <alexnet/network/dropout.h>

#include "network/kernels.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/empty_like.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>

namespace alexnet {
namespace {

using detail::acc_t;
using detail::kernel_layout;
using detail::narrow;
using detail::parallel_for_vectorized;

// A 32-bit integer hash with full avalanche (two multiply-xorshift rounds; the
// constants are C. Wellons's "lowbias32"). 32-bit products vectorise on every x86
// vector unit, where a 64-bit hash would not on AVX2.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

struct Mask {
  uint64_t key;
  uint32_t threshold;  // keep when the hash is below
  double scale;        // 1 / (1 - p)
};

// The mask of `key` for p in [0, 1): threshold (1 - p) 2^32 rounded, at most 2^32 - 1
// (p below 2^-33 keeps nearly all).
Mask mask_of(uint64_t key, double p) {
  return {key, static_cast<uint32_t>(std::min(std::nearbyint((1 - p) * 4294967296.0), 4294967295.0)), 1 / (1 - p)};
}

// out[j] = in[j] * (kept ? scale : 0) for j in [0, len), element j's hash being
// mix32(mix32((first + j) ^ k0) + k). Plain arguments: the loop vectorises.
template <typename T, typename A = acc_t<T>>
inline void mask_run(const T* __restrict in, T* __restrict out, uint64_t len, uint32_t first, uint32_t k0,
                     uint32_t k, uint32_t threshold, A scale) {
  for (uint64_t j = 0; j < len; ++j) {
    const uint32_t h = mix32(mix32((first + static_cast<uint32_t>(j)) ^ k0) + k);
    const A keep = h < threshold ? scale : A(0);
    out[j] = narrow<T>(static_cast<A>(in[j]) * keep);
  }
}

// out[i] = in[i] * (kept(i) ? scale : 0) for i in [0, n): the forward pass (in = the
// input) and the backward pass (in = the output's gradient) alike. Element i's hash
// is mix32(mix32(low32(i) ^ k0) + k1 + high32(i)): the high half is constant over
// each run, which then works on 32-bit lanes.
template <typename T>
void apply_mask(const T* in, T* out, int64_t n, const Mask& m) {
  const auto k0 = static_cast<uint32_t>(m.key), k1 = static_cast<uint32_t>(m.key >> 32);
  const auto scale = static_cast<acc_t<T>>(m.scale);
  const uint32_t threshold = m.threshold;
  parallel_for_vectorized(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t start = begin; start < end;) {
      const int64_t stop = std::min(end, ((start >> 32) + 1) << 32);  // high32(i) fixed in [start, stop)
      mask_run(in + start, out + start, static_cast<uint64_t>(stop - start), static_cast<uint32_t>(start), k0,
               k1 + static_cast<uint32_t>(start >> 32), threshold, scale);
      start = stop;
    }
  });
}

class DropoutFunction : public torch::autograd::Function<DropoutFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, double p) {
    uint64_t key;
    {
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      key = generator.get<at::CPUGeneratorImpl>()->random64();
    }
    const auto layout = kernel_layout(input);
    const auto x = input.contiguous(layout);
    auto y = at::empty_like(x);
    run(x, y, mask_of(key, p));
    ctx->saved_data["channels_last"] = layout == at::MemoryFormat::ChannelsLast;
    ctx->saved_data["key"] = static_cast<int64_t>(key);
    ctx->saved_data["p"] = p;
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    const auto m = mask_of(static_cast<uint64_t>(ctx->saved_data["key"].toInt()), ctx->saved_data["p"].toDouble());
    // The gradient in the forward's layout: element i meets the mask of output i.
    const auto gc = grad_outputs[0].contiguous(ctx->saved_data["channels_last"].toBool() ? at::MemoryFormat::ChannelsLast
                                                                                     : at::MemoryFormat::Contiguous);
    auto grad = at::empty_like(gc);
    run(gc, grad, m);
    return {grad, at::Tensor()};
  }

 private:
  static void run(const at::Tensor& in, at::Tensor& out, const Mask& m) {
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, in.scalar_type(), "alexnet_dropout", [&] {
      apply_mask(in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), in.numel(), m);
    });
  }
};

}  // namespace

at::Tensor dropout(const at::Tensor& input, double p, bool train) {
  TORCH_CHECK(p >= 0 && p <= 1, "dropout: probability must be between 0 and 1, got ", p);
  if (!train || p == 0) return input;
  RECORD_USER_SCOPE("alexnet::dropout");  // named in LibTorch's profiler
  if (p == 1 || !detail::fused_kernel_takes(input)) return at::dropout(input, p, train);
  return DropoutFunction::apply(input, p);
}

}  // namespace alexnet
