#pragma once

// The network (alexnet::alexnet, LibTorch only), in one include: the model and its
// layers (<alexnet/network/model.h>, lrn.h, pooling.h), checkpoints and what inference
// reads from them (checkpoint.h, preprocessing.h), PyTorch and TorchScript files
// (pytorch.h, torchscript.h), mixed precision (precision.h), the training step
// (trainer.h), data parallelism (distributed.h), process settings (runtime.h), and the
// summary (summary.h). Each header also stands alone. Nothing here needs OpenCV or
// includes a header of the data pipeline or training.

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/distributed.h>
#include <alexnet/network/error.h>
#include <alexnet/network/lrn.h>
#include <alexnet/network/model.h>
#include <alexnet/network/names.h>
#include <alexnet/network/numbers.h>
#include <alexnet/network/pooling.h>
#include <alexnet/network/precision.h>
#include <alexnet/network/preprocessing.h>
#include <alexnet/network/pytorch.h>
#include <alexnet/network/runtime.h>
#include <alexnet/network/summary.h>
#include <alexnet/network/torchscript.h>
#include <alexnet/network/trainer.h>
