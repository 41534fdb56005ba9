#pragma once

// Process-wide settings that make LibTorch fast on the CPU. The library never
// applies them itself; the apps do at start, and library users opt in.

#include <cstddef>
#include <cstdint>

namespace alexnet {

/// Installs a caching allocator as LibTorch's CPU allocator. LibTorch asks the C
/// library for every large activation afresh (conv1's are 148 MB at batch 128), and
/// glibc maps and unmaps blocks that large, so every training step page-faults
/// through them again: measured here, cloning a 148 MB tensor took 300 ms, against
/// 5 ms from reused memory. Blocks of 1 MiB or more are kept after they are freed
/// (up to `cache_limit` bytes) and handed out again for requests of the same rounded
/// size, which a training loop makes every step. Smaller blocks go to LibTorch's own
/// allocator. Idempotent; the first call's limit stays.
void use_caching_cpu_allocator(std::size_t cache_limit = std::size_t(8) << 30);

/// Bytes held in the cache, free for reuse (0 before use_caching_cpu_allocator).
std::size_t cached_cpu_bytes();

/// SplitMix64's output function (Steele, Lea, Flood 2014): nearby inputs give
/// unrelated outputs. The data pipeline's counter-based draws are splitmix64(key + i).
uint64_t splitmix64(uint64_t x);

/// The one seed mixer: a 64-bit seed from `seed` and up to three indices (rank, epoch,
/// step, image, device...). Every random draw of the library is keyed by one.
uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

/// Seeds LibTorch's generators: the CPU's and GPU 0's with `seed`, and GPU i's with
/// device_seed(seed, i). `torch::manual_seed` gives every GPU the same seed, so with the
/// towers on two GPUs (Section 3.2) both would draw the same dropout masks.
void manual_seed(uint64_t seed);

/// The seed manual_seed gives GPU `index`: `seed` for GPU 0, mix_seed(seed, index) for
/// the others.
uint64_t device_seed(uint64_t seed, uint64_t index);

/// TensorFloat-32 on CUDA GPUs from Ampere on: float32 convolutions (cuDNN) and matrix
/// products (cuBLAS) with 10-bit mantissas, several times faster. LibTorch's defaults
/// differ by op (convolutions on, matrix products off); this sets both. The trainer,
/// the benchmark and the GPU tests set it explicitly: off unless asked for. No effect
/// on CPUs.
void set_tf32(bool enabled);

}  // namespace alexnet
