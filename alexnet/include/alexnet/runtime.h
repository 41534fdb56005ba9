#pragma once

// Process-wide settings that make LibTorch fast on the CPU. The library never
// applies them itself; the apps do at start, and library users opt in.

#include <cstddef>

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

}  // namespace alexnet
