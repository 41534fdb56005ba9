#include <alexnet/network/error.h>
#include <alexnet/network/precision.h>

#include "network/autocast.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <algorithm>
#include <stdexcept>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

namespace alexnet {

// LibTorch 2.4 replaced the per-device autocast functions with device-generic ones.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool detail::autocast_enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
c10::ScalarType detail::autocast_dtype(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
namespace {
void set_autocast(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
void set_autocast_dtype(c10::DeviceType d, c10::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
}  // namespace
#else
bool detail::autocast_enabled(c10::DeviceType d) {
  return d == c10::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
c10::ScalarType detail::autocast_dtype(c10::DeviceType d) {
  return d == c10::kCPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
}
namespace {
void set_autocast(c10::DeviceType d, bool on) {
  if (d == c10::kCPU) {
    at::autocast::set_cpu_enabled(on);
  } else {
    at::autocast::set_enabled(on);
  }
}
void set_autocast_dtype(c10::DeviceType d, c10::ScalarType t) {
  if (d == c10::kCPU) {
    at::autocast::set_autocast_cpu_dtype(t);
  } else {
    at::autocast::set_autocast_gpu_dtype(t);
  }
}
}  // namespace
#endif


template <>
const std::vector<std::pair<std::string, Precision>>& names<Precision>() {
  static const std::vector<std::pair<std::string, Precision>> table{
      {"fp32", Precision::kFp32}, {"bf16", Precision::kBf16}, {"fp16", Precision::kFp16}, {"auto", Precision::kAuto}};
  return table;
}

bool runs_channels_last(const c10::Device& device, bool asked) { return asked || device.is_cpu(); }

Precision resolve(Precision precision, const std::vector<c10::Device>& devices) {
  if (precision == Precision::kFp16 &&
      std::any_of(devices.begin(), devices.end(), [](const c10::Device& d) { return d.is_cpu(); })) {
    throw OptionError("precision", "fp16 needs a CUDA device; on CPUs use bf16");
  }
  if (precision != Precision::kAuto) return precision;
  const bool cpu = std::all_of(devices.begin(), devices.end(), [](const c10::Device& d) { return d.is_cpu(); });
  return cpu && cpu_bf16() == CpuBf16::kNative ? Precision::kBf16 : Precision::kFp32;
}

CpuBf16 cpu_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  // AVX-512 with its byte/word, vector-length and doubleword extensions is what
  // oneDNN's bf16 kernels need (LibTorch's mkldnn_bf16_device_check); __builtin_cpu_supports
  // also checks that the OS saves the AVX-512 registers.
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl") ||
      !__builtin_cpu_supports("avx512dq")) {
    return CpuBf16::kNone;
  }
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool avx512_bf16 = __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5));  // AVX512_BF16
  const bool amx_bf16 = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx & (1u << 22));    // AMX-BF16
  return avx512_bf16 || amx_bf16 ? CpuBf16::kNative : CpuBf16::kEmulated;
#else
  return CpuBf16::kNone;
#endif
}

std::string describe(CpuBf16 support) {
  switch (support) {
    case CpuBf16::kNative:
      return "this CPU multiplies in bf16 (AVX512_BF16 or AMX): bf16 is faster than fp32";
    case CpuBf16::kEmulated:
      return "this CPU has AVX-512 but no bf16 instructions: bf16 is converted to fp32 and no faster";
    case CpuBf16::kNone:
      return "this CPU has no AVX-512: bf16 runs in LibTorch's reference kernels, slower than fp32";
  }
  return {};
}

AutocastGuard::AutocastGuard(c10::DeviceType device, Precision precision) : device_(device) {
  precision = resolve(precision, {c10::Device(device)});
  if (precision == Precision::kFp32) return;
  if (device != c10::kCPU && device != c10::kCUDA) {
    throw std::invalid_argument("mixed precision needs a CPU or CUDA device");
  }
  active_ = true;
  was_enabled_ = detail::autocast_enabled(device);
  old_dtype_ = detail::autocast_dtype(device);
  set_autocast(device, true);
  set_autocast_dtype(device, precision == Precision::kBf16 ? at::kBFloat16 : at::kHalf);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  // Leaving the outermost autocast region frees the casts it cached (weights).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(device_, was_enabled_);
  set_autocast_dtype(device_, old_dtype_);
}

LossScaler::LossScaler(bool enabled, LossScalerOptions options)
    : enabled_(enabled), options_(options), scale_(options.init_scale) {
  if (options.init_scale <= 0 || options.growth_factor <= 1 || options.backoff_factor <= 0 ||
      options.backoff_factor >= 1 || options.growth_interval <= 0) {
    throw std::invalid_argument("loss scaler: the scale must be positive, growth > 1, backoff in (0, 1)");
  }
}

at::Tensor LossScaler::scale(const at::Tensor& loss) const { return enabled_ ? loss * scale_ : loss; }

bool LossScaler::unscale_and_update(const std::vector<at::Tensor>& gradients) {
  if (!enabled_) return true;
  // One flag on the gradients' device, read once: a single synchronisation per step.
  at::Tensor bad;
  for (const auto& g : gradients) {
    if (!g.defined()) continue;
    const auto here = g.isfinite().logical_not().any();
    bad = bad.defined() ? bad.logical_or(here.to(bad.device())) : here;
    g.mul_(1.0 / scale_);
  }
  const bool finite = !bad.defined() || !bad.item<bool>();
  if (!finite) {
    scale_ *= options_.backoff_factor;
    good_steps_ = 0;
  } else if (++good_steps_ == options_.growth_interval) {
    scale_ *= options_.growth_factor;
    good_steps_ = 0;
  }
  return finite;
}

std::vector<double> LossScaler::state() const { return {scale_, static_cast<double>(good_steps_)}; }

void LossScaler::load_state(const std::vector<double>& state) {
  if (state.size() != 2 || !(state[0] > 0)) throw std::invalid_argument("loss scaler: malformed state");
  scale_ = state[0];
  good_steps_ = static_cast<int64_t>(state[1]);
}

}  // namespace alexnet
