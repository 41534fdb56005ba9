#pragma once

// Features for retrieval and the paper's pictures: fc7 activations as NumPy files
// (Section 6.1, Figure 4), conv1's kernels (Figure 3), training curves.

#include <alexnet/data.h>
#include <alexnet/model.h>
#include <alexnet/train.h>

#include <string>
#include <vector>

namespace alexnet {

/// Activations of `layer` for every image of `source`, centre crop: float32 [N, D].
torch::Tensor extract_features(AlexNet& model, const std::shared_ptr<data::Source>& source,
                               const Preprocessing& pre, Layer layer = Layer::kFc7, int64_t batch_size = 128,
                               int64_t workers = 2);

/// Writes a float32 or float64 2-D tensor as a NumPy .npy file (format 1.0), atomically.
void write_npy(const torch::Tensor& array, const std::string& path);
/// Reads a .npy file of float32 [N, D] (as write_npy writes); throws naming the file otherwise.
torch::Tensor read_npy(const std::string& path);

/// The `k` rows of `features` nearest to `query` by Euclidean distance (the query's
/// own row excluded when `exclude` >= 0): indices and distances, nearest first.
std::pair<std::vector<int64_t>, std::vector<double>> nearest(const torch::Tensor& features,
                                                             const torch::Tensor& query, int64_t k,
                                                             int64_t exclude = -1);

/// conv1's kernels as one picture (Figure 3): each kernel scaled to 0..255 and
/// enlarged, tower 0's kernels in the top rows, tower 1's below, a gap between.
data::Image kernel_grid(const AlexNetImpl& model, int64_t scale = 4);

/// Training curves (loss; top-1 and top-5 error; learning rate) per epoch, with axes,
/// labels and legends, as one picture.
data::Image plot_curves(const std::vector<EpochMetrics>& history);

/// Reads metrics.jsonl as Trainer writes it.
std::vector<EpochMetrics> read_metrics(const std::string& path);

/// A row of images (the query, then its neighbours) at `side` pixels each.
data::Image image_row(const std::vector<data::Image>& images, int64_t side = 96);

}  // namespace alexnet
