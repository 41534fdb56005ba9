#pragma once

// Features for retrieval and the paper's pictures: features as NumPy files and their
// nearest neighbours (Section 6.1, Figure 4; <alexnet/train/inference.h> computes them),
// conv1's kernels (Figure 3), training curves.

#include <alexnet/data/image.h>
#include <alexnet/network/model.h>
#include <alexnet/train/run.h>

#include <c10/util/Optional.h>

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

/// A features file (`alexnet features`) and what its rows are.
struct Features {
  torch::Tensor values;             ///< float32 [N, D]
  c10::optional<Layer> layer;       ///< the layer they are the activations of (none: a file from before it was recorded)
  std::string weights;              ///< the checkpoint they were computed with
  std::vector<std::string> images;  ///< the image of each row
  c10::optional<Precision> precision;  ///< fp32 or bf16, as computed (none: not recorded)
};

/// Writes FILE.npy (the values), FILE.txt (the images, write_row_names) and FILE.json
/// ({"layer": "fc7", "weights": "run/best.pt", "rows": N, "dimension": D, and
/// "precision": "bf16" when known}) for `npy`
/// = FILE.npy, each atomically. Throws naming the file when `features` has no layer
/// or its rows and images differ in number.
void write_features(const Features& features, const std::string& npy);
/// Reads what write_features wrote; a file without FILE.json (or FILE.txt) has no layer
/// (or no images). Throws naming the file that is malformed or disagrees with the values.
Features read_features(const std::string& npy);

/// The activations of `image` as `features`' rows were computed: at their layer, with
/// `weights` (empty: the checkpoint the file names), centre crop. Throws naming the
/// file when it does not record its layer, when `weights` is not the checkpoint it
/// came from (while that one still exists), or when the result's width is not the
/// file's. `precision` as InferenceOptions'; kAuto takes the one the rows were computed
/// at where the file records it (an image query at another precision lands away from
/// its own row: 0.03 instead of 1e-6 for fc7 in bf16 against float32).
torch::Tensor features_like(const Features& features, const std::string& image, const std::string& weights = "",
                            Precision precision = Precision::kAuto);

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

/// A row of images (the query, then its neighbours; a red line after the query) at
/// `side` pixels each, each with its lines of `captions` under it (none: no captions;
/// else one list per image, each line cut to the image's width). Throws
/// std::invalid_argument when the counts differ.
data::Image image_row(const std::vector<data::Image>& images, const std::vector<std::vector<std::string>>& captions = {},
                      int64_t side = 96);

}  // namespace alexnet
