#pragma once

// Features for retrieval and the paper's pictures: features as NumPy files and their
// nearest neighbours (Section 6.1, Figure 4; <alexnet/inference.h> computes them),
// conv1's kernels (Figure 3), training curves.

#include <alexnet/image.h>
#include <alexnet/model.h>
#include <alexnet/train.h>

#include <string>
#include <vector>

namespace alexnet {

/// Writes a float32 or float64 2-D tensor as a NumPy .npy file (format 1.0), atomically.
void write_npy(const torch::Tensor& array, const std::string& path);
/// Reads a .npy file of float32 [N, D] (as write_npy writes); throws naming the file otherwise.
torch::Tensor read_npy(const std::string& path);

/// Writes one name per line beside an .npy file (the images of its rows), atomically.
/// A name is a file name, which may hold any byte but NUL: backslash, newline and
/// carriage return are written as \\, \n and \r, so a row stays one line.
void write_row_names(const std::vector<std::string>& names, const std::string& path);
/// Reads them back as write_row_names wrote them; throws naming the file.
std::vector<std::string> read_row_names(const std::string& path);

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

namespace detail {
/// Round axis ticks covering [lo, hi]: multiples of 1, 2 or 5 times a power of ten,
/// about `intervals` intervals, from the last at or below lo to the first at or above hi.
std::vector<double> axis_ticks(double lo, double hi, int intervals = 5);
/// Ticks for a log axis covering [lo, hi] (> 0): powers of ten, with 2 and 5 times them
/// within two decades, from the last at or below lo to the first at or above hi.
std::vector<double> log_axis_ticks(double lo, double hi);
}  // namespace detail

/// A row of images (the query, then its neighbours) at `side` pixels each.
data::Image image_row(const std::vector<data::Image>& images, int64_t side = 96);

}  // namespace alexnet
