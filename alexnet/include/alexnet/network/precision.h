#pragma once

// Mixed precision: autocast to bfloat16 or float16 around the forward pass, and for
// float16 the dynamic loss scaling that PyTorch's GradScaler does (LibTorch's C++ API
// has none): the loss is multiplied by a large scale so that small gradients survive
// in half precision; the gradients are divided by it before the update, a step whose
// gradients are not finite is skipped and the scale halved, and after
// `growth_interval` good steps the scale doubles.

#include <alexnet/network/names.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet {

enum class Precision {
  kFp32,  ///< float32 throughout
  kBf16,  ///< autocast to bfloat16 (CPU or CUDA); no loss scaling needed
  kFp16,  ///< autocast to float16 with dynamic loss scaling (CUDA)
  kAuto,  ///< bf16 where every device is a CPU that multiplies in bf16 (cpu_bf16() native), else fp32
};

template <>
const std::vector<std::pair<std::string, Precision>>& names<Precision>();  ///< fp32, bf16, fp16, auto

/// What bfloat16 arithmetic this CPU offers LibTorch's oneDNN (its CPU convolutions
/// and bf16 matrix products), found at run time from CPUID.
enum class CpuBf16 {
  kNative,    ///< AVX512_BF16 or AMX-BF16: bf16 dot products, about twice float32's rate
  kEmulated,  ///< AVX-512 without them: oneDNN converts to float32, no faster than fp32
  kNone,      ///< no AVX-512 (or not x86-64): LibTorch's reference kernels, slower than fp32
};
CpuBf16 cpu_bf16();
/// One line for help texts and logs: what `--precision bf16` does on this CPU.
std::string describe(CpuBf16 support);

/// `precision` on `devices`, kAuto made fp32 or bf16 (its rule above); others as given.
/// Throws OptionError for fp16 where a device is a CPU (fp16 runs on CUDA; on CPUs, bf16).
Precision resolve(Precision precision, const std::vector<c10::Device>& devices);

/// Whether the network runs channels-last (NHWC): when `asked`, and always on a CPU,
/// in every precision: oneDNN's convolutions run faster in it (float32 inference 1.25x,
/// training 1.1x NCHW on a 2-core AVX512-BF16 CPU, docs/benchmarks.md) and the fused
/// LRN and pooling read and write it directly.
bool runs_channels_last(const c10::Device& device, bool asked = false);

/// Autocast on `device` at `precision` while it lives (nothing for fp32).
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, Precision precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool active_ = false;
  bool was_enabled_ = false;
  c10::ScalarType old_dtype_;
};

struct LossScalerOptions {
  double init_scale = 65536.0;  // 2^16, PyTorch's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class LossScaler {
 public:
  /// A disabled scaler passes losses and gradients through unchanged.
  explicit LossScaler(bool enabled = false, LossScalerOptions options = {});

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  /// `loss` times the scale.
  at::Tensor scale(const at::Tensor& loss) const;
  /// Divides `gradients` by the scale in place; whether all are finite (the update
  /// may be taken), then adjusts the scale as described above.
  bool unscale_and_update(const std::vector<at::Tensor>& gradients);

  /// Scale and good-steps count, for checkpoints.
  std::vector<double> state() const;
  void load_state(const std::vector<double>& state);

 private:
  bool enabled_;
  LossScalerOptions options_;
  double scale_;
  int64_t good_steps_ = 0;
};

}  // namespace alexnet
