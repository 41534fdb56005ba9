#pragma once

#include <exception>
#include <string>

namespace alexnet {

/// The one-line message of an exception: for LibTorch's c10::Error, the message
/// without the C++ backtrace and source location that `what()` appends.
std::string error_message(const std::exception& error);

}  // namespace alexnet
