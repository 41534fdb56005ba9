#pragma once
// Autocast's state, read the same way under LibTorch 1.13 and 2.x (which replaced the
// per-device functions with device-generic ones). Defined in precision.cpp.

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace alexnet::detail {

/// Whether autocast is on for `device` in this thread.
bool autocast_enabled(c10::DeviceType device);
/// The type autocast casts to on `device`.
c10::ScalarType autocast_dtype(c10::DeviceType device);

}  // namespace alexnet::detail
