// Precompiled for every target in this build: the LibTorch headers that cost
// most of a translation unit's compile time.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
