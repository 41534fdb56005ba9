#pragma once
// Helpers of the fused CPU kernels (LRN, max pooling): arithmetic in float32 for
// bfloat16 storage, conversions that compile to selects, not branches, so that the
// loops around them vectorise, and parallel loops whose bodies are compiled for the
// vector units the CPU has.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace alexnet::detail {

/// The arithmetic type for storage type T: float for bfloat16, T itself otherwise.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, c10::BFloat16>, float, T>;

/// The layout a kernel runs `x` in: channels-last for a 4-D tensor in that layout (what
/// oneDNN's convolutions give), else contiguous (NCHW). A tensor both are, runs NCHW.
inline at::MemoryFormat kernel_layout(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

/// Whether the fused CPU kernels (LRN, pooling, dropout) take `x`: a non-empty strided
/// CPU tensor of float, double or bfloat16. Others go to LibTorch's operators.
inline bool fused_kernel_takes(const at::Tensor& x) {
  const auto type = x.scalar_type();
  return x.device().is_cpu() && x.layout() == at::kStrided && x.numel() > 0 &&
         (type == at::kFloat || type == at::kDouble || type == at::kBFloat16);
}

/// The bits of a float or double as the unsigned integer of its size (for tests and
/// reductions in integer arithmetic, which vectorise where float ones would not).
template <typename A>
inline auto bits_of(A value) {
  static_assert(sizeof(A) == 4 || sizeof(A) == 8, "bits_of: float or double");
  std::conditional_t<sizeof(A) == 4, uint32_t, uint64_t> u;
  std::memcpy(&u, &value, sizeof u);
  return u;
}

/// `value` rounded to T: for bfloat16, to nearest even (NaN stays a quiet NaN), as
/// c10::BFloat16's constructor, but without its branch.
template <typename T, typename A>
inline T narrow(A value) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const auto bits = static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
    return T(bits, T::from_bits());
  } else {
    return static_cast<T>(value);
  }
}

// The build targets any x86-64 (SSE2); a kernel body compiled once per instruction
// set (AVX-512, AVX2, baseline), the CPU's chosen when the program loads (GCC's
// function multiversioning, as LibTorch's CPU_CAPABILITY dispatch): `flatten` inlines
// the body's callees into each version, so they vectorise with its vector width.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ALEXNET_VECTORIZED __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define ALEXNET_VECTORIZED
#endif

template <typename F>
ALEXNET_VECTORIZED void run_vectorized(int64_t begin, int64_t end, const F& body) {
  body(begin, end);
}

/// at::parallel_for whose `body(begin, end)` runs in its vectorised version.
template <typename F>
void parallel_for_vectorized(int64_t begin, int64_t end, int64_t grain, const F& body) {
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { run_vectorized(b, e, body); });
}

}  // namespace alexnet::detail
