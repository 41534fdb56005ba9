#pragma once

// The data pipeline (alexnet::data) of Sections 2 and 4.1, in one include: image
// decoding (<alexnet/data/image.h>), ImageNet-style folders,
// list files and packed sets (<alexnet/data/source.h>, <alexnet/data/packed.h>),
// Fashion-MNIST (<alexnet/data/fashion_mnist.h>), the training set's statistics
// (<alexnet/data/statistics.h>), and the transforms, batches and sampler the data
// loader uses (<alexnet/data/dataset.h>). Decoding uses OpenCV inside the library's
// `alexnet::data` target; no header includes it. Images are RGB everywhere, uint8
// until `Preprocessing::apply`.

#include <alexnet/data/dataset.h>
#include <alexnet/data/fashion_mnist.h>
#include <alexnet/data/image.h>
#include <alexnet/data/packed.h>
#include <alexnet/data/source.h>
#include <alexnet/data/statistics.h>
