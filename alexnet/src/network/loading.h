#pragma once

// Internal: building a network whose weights come from a file. While an
// Uninitialized guard lives on a thread, AlexNet's constructor there allocates every
// parameter without writing it (its pages untouched) and draws no random number:
// neither our initialisation (Section 5) nor LibTorch's layers' own, whose
// constructors build 1x1 layers that are then given their true sizes. The default
// CPU generator is left as it was.

#include <alexnet/network/checkpoint.h>

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace alexnet::detail {

class Uninitialized {
 public:
  Uninitialized();
  ~Uninitialized();
  Uninitialized(const Uninitialized&) = delete;
  Uninitialized& operator=(const Uninitialized&) = delete;

  /// Whether a guard lives on this thread.
  static bool active();

 private:
  bool was_;
  at::Tensor generator_;  // the default CPU generator's state, put back at the end
};

/// alexnet::load with the floating-point parameters read as `dtype` (a float32 file
/// read as bfloat16 never holds its float32 weights whole) and, with `channels_last`,
/// the convolutions' weights channels-last.
AlexNet load(const std::string& path, const std::vector<c10::Device>& devices, c10::ScalarType dtype,
             bool channels_last, CheckpointExtras* extras);

}  // namespace alexnet::detail
