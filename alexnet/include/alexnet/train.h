#pragma once

// Training and inference over data sets (alexnet::train), in one include: a run, its
// configuration and the epoch loop (<alexnet/train/run.h>), evaluation, classification
// and features (inference.h), the paper's pictures and retrieval (visualize.h), and
// the paper's claims measured against its alternatives (ablation.h).
// The step itself is the network's (<alexnet/network/trainer.h>).

#include <alexnet/train/ablation.h>
#include <alexnet/train/inference.h>
#include <alexnet/train/run.h>
#include <alexnet/train/visualize.h>
