#pragma once

// The data set as LibTorch's data loader reads it (Sections 2 and 4.1): decoding on
// worker threads, random crops, reflections and PCA colour noise for training, the
// centre or ten crops for testing; and the order of each epoch.
//
//   auto source = alexnet::data::open_source("train/");      // folder, list or packed
//   alexnet::data::ImageDataset train(source, alexnet::data::TransformOptions().seed(1), stats);
//   auto loader = torch::data::make_data_loader(train, EpochSampler(source->size(), 1),
//                                               torch::data::DataLoaderOptions(128).workers(2));
//   for (auto& batch : *loader) {
//     auto x = alexnet::data::normalize(batch, preprocessing, device);  // float, mean subtracted

#include <alexnet/data/source.h>
#include <alexnet/data/statistics.h>
#include <alexnet/network/names.h>
#include <alexnet/network/preprocessing.h>

#include <torch/arg.h>
#include <torch/data/datasets/base.h>
#include <torch/data/samplers/base.h>
#include <torch/serialize/archive.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace alexnet::data {

enum class Mode {
  kTrain,    ///< random crop, random reflection, PCA colour noise (Section 4.1)
  kCenter,   ///< the central crop
  kTenCrop,  ///< four corners and centre, and their reflections (Section 4.1)
};

struct TransformOptions {
  TransformOptions() = default;
  /// Side the images are brought to before cropping (Section 2: 256).
  TORCH_ARG(int64_t, resize) = 256;
  /// Side of the crops the network sees (227; the paper's text says 224).
  TORCH_ARG(int64_t, crop) = 227;
  TORCH_ARG(Mode, mode) = Mode::kTrain;
  /// Standard deviation of the PCA noise's alpha (Section 4.1(b): 0.1); 0 disables it.
  TORCH_ARG(double, pca_std) = 0.1;
  /// Random crops in training (Section 4.1(a)); false: the centre crop, the
  /// alternative the paper says overfits substantially.
  TORCH_ARG(bool, random_crop) = true;
  /// Random reflections in training (Section 4.1(a)).
  TORCH_ARG(bool, flip) = true;
  /// Seeds every random draw; with the epoch and index it fixes an example's crop,
  /// reflection and colour noise whatever the number of workers.
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(OnError, on_error) = OnError::kFail;
};

/// A batch as the workers assemble it: uint8 images, labels, where each crop was cut
/// and each image's PCA colour offset (both used by `Preprocessing::apply`, so pixels
/// stay uint8 until then).
struct Batch {
  torch::Tensor images;   ///< uint8 [B, 3, crop, crop]; [B * 10, ...] for ten-crop
  torch::Tensor labels;   ///< int64 [B]
  torch::Tensor colour;   ///< float32 [B, 3] ([B * 10, 3] for ten-crop; zeros outside training)
  torch::Tensor windows;  ///< int64 [B, 3]: each crop's (y0, x0, flip) in its resize x resize image
  std::vector<size_t> indices;
  int64_t skipped = 0;   ///< images left out (OnError::kSkip)
};

/// The data set as LibTorch's data loader uses it: `get_batch` decodes, transforms
/// and packs a batch on a worker thread.
class ImageDataset : public torch::data::datasets::BatchDataset<ImageDataset, Batch> {
 public:
  ImageDataset(std::shared_ptr<Source> source, TransformOptions options,
               std::optional<Statistics> stats = std::nullopt);

  Batch get_batch(c10::ArrayRef<size_t> indices) override;
  torch::optional<size_t> size() const override;

  /// The epoch that seeds the random draws; set it before each epoch.
  void set_epoch(int64_t epoch);
  const Source& source() const { return *source_; }
  const TransformOptions& options() const { return options_; }

 private:
  std::shared_ptr<Source> source_;
  TransformOptions options_;
  std::optional<Statistics> stats_;
  std::shared_ptr<std::atomic<int64_t>> epoch_;
};

/// The network's input for `batch` on `device`, as `pre` says (`Preprocessing::apply`):
/// the uint8 batch is copied first, so the conversion runs there.
torch::Tensor normalize(const Batch& batch, const Preprocessing& pre, const c10::Device& device);
/// The same with `stats`'s per-channel means (raw 0..255 scale) and the PCA colour offsets.
torch::Tensor normalize(const Batch& batch, const Statistics& stats, const c10::Device& device);

/// The order of an epoch: a permutation seeded by (seed, epoch), the same however
/// many workers read it, split into `world` disjoint shards of which this process
/// reads shard `rank` (data parallelism): positions rank, rank + world, ... of the
/// permutation, so that step s of the `world` shards together is step s of one process
/// with `world` times the batch. Shards are equal (size / world examples; the
/// remainder of each epoch's permutation is left out) so every process takes the
/// same number of steps. Without shuffling, the natural order.
class EpochSampler : public torch::data::samplers::Sampler<std::vector<size_t>> {
 public:
  EpochSampler(size_t size, uint64_t seed, bool shuffle = true, size_t rank = 0, size_t world = 1);
  /// The epoch to draw; `skip` leaves out its first examples (resuming mid-epoch).
  void set_epoch(int64_t epoch, size_t skip = 0);
  void reset(torch::optional<size_t> new_size = torch::nullopt) override;
  torch::optional<std::vector<size_t>> next(size_t batch_size) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;
  /// Examples this process reads per epoch.
  size_t shard_size() const;

 private:
  size_t size_, rank_, world_;
  uint64_t seed_;
  bool shuffle_;
  int64_t epoch_ = 0;
  std::vector<size_t> order_;
  size_t skip_ = 0;
  size_t position_ = 0;
};

}  // namespace alexnet::data

namespace alexnet {
template <>
const std::vector<std::pair<std::string, data::Mode>>& names<data::Mode>();  ///< train, center, ten_crop
}  // namespace alexnet
