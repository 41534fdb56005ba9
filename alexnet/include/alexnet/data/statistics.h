#pragma once

// A training set's statistics: the mean image that Section 2 subtracts, per-channel
// means, and the principal components of its RGB values that Section 4.1(b)'s colour
// noise follows.

#include <alexnet/data/source.h>

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace alexnet::data {

/// The statistics of Section 2 and 4.1(b): the mean image, per-channel means, and the
/// principal components of the RGB values over the training set.
struct Statistics {
  torch::Tensor mean_image;   ///< float64 [3, S, S], 0..255 scale
  torch::Tensor mean_rgb;     ///< float64 [3]
  torch::Tensor eigenvalues;  ///< float64 [3], descending
  torch::Tensor eigenvectors; ///< float64 [3, 3], rows are eigenvectors
  int64_t images = 0;

  std::string to_json() const;
  void save(const std::string& path) const;  ///< atomically
  static Statistics load(const std::string& path);
};

/// One pass over `source` with `workers` threads, accumulating in double. When `stop`
/// is set (a signal handler's flag) the pass ends within an image per thread and
/// throws alexnet::Stopped.
Statistics compute_statistics(const Source& source, int64_t side = 256, int64_t workers = 2,
                              OnError on_error = OnError::kFail, int64_t* skipped = nullptr,
                              const std::atomic<bool>* stop = nullptr);

}  // namespace alexnet::data
