#include <alexnet/network/runtime.h>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

namespace alexnet {
namespace {

constexpr std::size_t kMinCached = std::size_t(1) << 20;  // smaller blocks are cheap anyway
constexpr std::size_t kGranule = std::size_t(64) << 10;   // sizes round up to 64 KiB

// data == context for every block, as LibTorch's raw_allocate requires, so one
// deleter serves all: it knows the cached blocks by address.
class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(std::size_t limit) : limit_(limit) {}

  // LibTorch 1.13 declares allocate const, 2.x not: defining both overrides either.
  c10::DataPtr allocate(std::size_t n) const { return take(n); }
  c10::DataPtr allocate(std::size_t n) { return take(n); }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  // Pure virtual in LibTorch 2.x, absent in 1.13.
  void copy_data(void* dest, const void* src, std::size_t count) const {
    std::memcpy(dest, src, count);
  }

  std::size_t cached() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  static CachingCpuAllocator* instance;

 private:
  c10::DataPtr take(std::size_t n) const {
    if (n < kMinCached) return wrap(c10::alloc_cpu(n));
    const std::size_t size = (n + kGranule - 1) / kGranule * kGranule;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto found = free_.find(size);
      if (found != free_.end()) {
        void* data = found->second;
        free_.erase(found);
        cached_ -= size;
        return wrap(data);
      }
    }
    void* data = c10::alloc_cpu(size);
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[data] = size;
    return wrap(data);
  }

  static c10::DataPtr wrap(void* data) {
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  static void release(void* data) {
    auto& self = *instance;
    {
      std::lock_guard<std::mutex> lock(self.mutex_);
      const auto found = self.sizes_.find(data);
      if (found != self.sizes_.end()) {
        if (self.cached_ + found->second <= self.limit_) {
          self.free_.emplace(found->second, data);
          self.cached_ += found->second;
          return;
        }
        self.sizes_.erase(found);
      }
    }
    c10::free_cpu(data);
  }

  const std::size_t limit_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<void*, std::size_t> sizes_;  // every large block, by address
  mutable std::multimap<std::size_t, void*> free_;         // the cached ones, by size
  mutable std::size_t cached_ = 0;
};

CachingCpuAllocator* CachingCpuAllocator::instance = nullptr;

}  // namespace

void use_caching_cpu_allocator(std::size_t cache_limit) {
  static std::once_flag once;
  std::call_once(once, [cache_limit] {
    // Never destroyed: tensors may be freed during static destruction.
    CachingCpuAllocator::instance = new CachingCpuAllocator(cache_limit);
    c10::SetCPUAllocator(CachingCpuAllocator::instance, /*priority=*/1);
  });
}

std::size_t cached_cpu_bytes() {
  return CachingCpuAllocator::instance ? CachingCpuAllocator::instance->cached() : 0;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  return splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ a) ^ b) ^ c);
}

void manual_seed(uint64_t seed) {
  torch::manual_seed(seed);
  const auto gpus = torch::cuda::device_count();
  for (size_t i = 1; i < gpus; ++i) {
    auto generator = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i)));
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(device_seed(seed, i));
  }
}

uint64_t device_seed(uint64_t seed, uint64_t index) { return index == 0 ? seed : mix_seed(seed, index); }

void set_tf32(bool enabled) {
  at::globalContext().setAllowTF32CuDNN(enabled);
  at::globalContext().setAllowTF32CuBLAS(enabled);
}

}  // namespace alexnet
