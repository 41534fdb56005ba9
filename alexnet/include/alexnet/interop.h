#pragma once

// Interchange with other systems (alexnet::interop), in one include: ONNX export
// (<alexnet/interop/onnx.h>) and Caffe import (caffe.h). PyTorch and TorchScript files
// are the network's own (<alexnet/network/pytorch.h>, torchscript.h).

#include <alexnet/interop/caffe.h>
#include <alexnet/interop/onnx.h>
