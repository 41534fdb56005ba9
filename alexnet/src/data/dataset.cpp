#include <alexnet/data/dataset.h>
#include <alexnet/network/runtime.h>

#include <torch/cuda.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace alexnet {

template <>
const std::vector<std::pair<std::string, data::Mode>>& names<data::Mode>() {
  static const std::vector<std::pair<std::string, data::Mode>> table{
      {"train", data::Mode::kTrain}, {"center", data::Mode::kCenter}, {"ten_crop", data::Mode::kTenCrop}};
  return table;
}

}  // namespace alexnet

namespace alexnet::data {
namespace {

// A small counter-based generator: draws depend only on its key.
class Draws {
 public:
  explicit Draws(uint64_t key) : state_(key) {}
  uint64_t next() { return splitmix64(state_++); }
  /// Uniform in [0, n).
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  /// Uniform in (0, 1).
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  /// Standard normal (Box-Muller), identical on every platform.
  double normal() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }

 private:
  uint64_t state_;
};

// Copies the crop at (x0, y0) into `out` ([3, crop, crop], channel-major), reflected
// horizontally when `flip`.
void put_crop(const Image& image, int64_t x0, int64_t y0, int64_t crop, bool flip, uint8_t* out) {
  const int64_t plane = crop * crop;
  for (int64_t y = 0; y < crop; ++y) {
    const uint8_t* row = image.at(y0 + y, x0);
    uint8_t* r = out + y * crop;
    uint8_t* g = r + plane;
    uint8_t* b = g + plane;
    for (int64_t x = 0; x < crop; ++x) {
      const uint8_t* p = row + 3 * (flip ? crop - 1 - x : x);
      r[x] = p[0];
      g[x] = p[1];
      b[x] = p[2];
    }
  }
}

}  // namespace


ImageDataset::ImageDataset(std::shared_ptr<Source> source, TransformOptions options,
                           std::optional<Statistics> stats)
    : source_(std::move(source)), options_(options), stats_(std::move(stats)),
      epoch_(std::make_shared<std::atomic<int64_t>>(0)) {
  if (options_.crop() <= 0 || options_.crop() > options_.resize()) {
    throw std::invalid_argument("data: crop " + std::to_string(options_.crop()) + " must be in [1, resize = " +
                                std::to_string(options_.resize()) + "]");
  }
  if (options_.mode() == Mode::kTrain && options_.pca_std() > 0 && !stats_) {
    throw std::invalid_argument("data: PCA colour noise needs the data set's statistics (alexnet stats), or pca_std 0");
  }
}

void ImageDataset::set_epoch(int64_t epoch) { *epoch_ = epoch; }

torch::optional<size_t> ImageDataset::size() const { return source_->size(); }

Batch ImageDataset::get_batch(c10::ArrayRef<size_t> indices) {
  const int64_t crop = options_.crop();
  const int64_t resize = options_.resize();
  const int64_t views = options_.mode() == Mode::kTenCrop ? 10 : 1;
  const auto n = static_cast<int64_t>(indices.size());
  Batch batch;
  batch.images = torch::empty({n * views, 3, crop, crop},
                              torch::TensorOptions(torch::kUInt8).pinned_memory(torch::cuda::is_available()));
  batch.labels = torch::empty({n}, torch::kLong);
  batch.colour = torch::zeros({n * views, 3});
  batch.windows = torch::zeros({n * views, 3}, torch::kLong);
  auto* pixels = batch.images.data_ptr<uint8_t>();
  auto* windows = batch.windows.data_ptr<int64_t>();
  auto* labels = batch.labels.data_ptr<int64_t>();
  auto* colour = batch.colour.data_ptr<float>();
  const int64_t per_view = 3 * crop * crop;
  const int64_t epoch = *epoch_;
  int64_t kept = 0;
  for (const size_t index : indices) {
    Image image;
    try {
      image = to_rgb(source_->image(index, resize));
    } catch (const std::exception&) {
      if (options_.on_error() == OnError::kFail) throw;
      ++batch.skipped;
      continue;
    }
    uint8_t* out = pixels + kept * views * per_view;
    const int64_t margin = resize - crop;
    // Each crop's window, for the mean image (Preprocessing::apply).
    auto cut = [&](int64_t view, int64_t x0, int64_t y0, bool flip) {
      put_crop(image, x0, y0, crop, flip, out + view * per_view);
      int64_t* w = windows + (kept * views + view) * 3;
      w[0] = y0, w[1] = x0, w[2] = flip;
    };
    if (options_.mode() == Mode::kTrain) {
      // Section 4.1: a random crop, a random reflection and PCA colour noise, all
      // drawn from (seed, epoch, index) so workers cannot change them.
      Draws draws(mix_seed(options_.seed(), static_cast<uint64_t>(epoch), index));
      // The draws are taken whatever is switched off, so that what stays on draws the
      // same as in a run with everything on (an ablation changes one thing).
      int64_t x0 = draws.below(margin + 1);
      int64_t y0 = draws.below(margin + 1);
      if (!options_.random_crop()) x0 = y0 = margin / 2;
      const bool flip = options_.flip() && (draws.next() & 1);
      cut(0, x0, y0, flip);
      if (options_.pca_std() > 0) {
        // sum_i alpha_i lambda_i p_i. The eigenvalues are of the raw 0..255 values;
        // lambda / 255 is the eigenvalue on the [0, 1] scale times 255, so the
        // offset is the paper's formula on [0, 1] pixels, expressed in 0..255.
        const auto values = stats_->eigenvalues.accessor<double, 1>();
        const auto vectors = stats_->eigenvectors.accessor<double, 2>();
        for (int64_t i = 0; i < 3; ++i) {
          const double scale = draws.normal() * options_.pca_std() * values[i] / 255.0;
          for (int64_t c = 0; c < 3; ++c) colour[kept * 3 + c] += static_cast<float>(scale * vectors[i][c]);
        }
      }
    } else if (options_.mode() == Mode::kCenter) {
      cut(0, margin / 2, margin / 2, false);
    } else {
      // Section 4.1: the four corners and the centre, then their reflections.
      const int64_t xs[5] = {0, margin, 0, margin, margin / 2};
      const int64_t ys[5] = {0, 0, margin, margin, margin / 2};
      for (int64_t v = 0; v < 10; ++v) cut(v, xs[v % 5], ys[v % 5], v >= 5);
    }
    labels[kept] = source_->label(index);
    batch.indices.push_back(index);
    ++kept;
  }
  if (kept < n) {
    batch.images = batch.images.narrow(0, 0, kept * views);
    batch.labels = batch.labels.narrow(0, 0, kept);
    batch.colour = batch.colour.narrow(0, 0, kept * views);
    batch.windows = batch.windows.narrow(0, 0, kept * views);
  }
  return batch;
}

torch::Tensor normalize(const Batch& batch, const Preprocessing& pre, const c10::Device& device) {
  return pre.apply(batch.images, batch.windows, batch.colour, device);
}

torch::Tensor normalize(const Batch& batch, const Statistics& stats, const c10::Device& device) {
  const auto mean = stats.mean_rgb.to(torch::kFloat).to(device).view({1, 3, 1, 1});
  return batch.images.to(device, /*non_blocking=*/true)
      .to(torch::kFloat)
      .sub_(mean)
      .add_(batch.colour.to(device, /*non_blocking=*/true).view({-1, 3, 1, 1}));
}

EpochSampler::EpochSampler(size_t size, uint64_t seed, bool shuffle, size_t rank, size_t world)
    : size_(size), rank_(rank), world_(world), seed_(seed), shuffle_(shuffle) {
  if (world == 0 || rank >= world) {
    throw std::invalid_argument("sampler: rank " + std::to_string(rank) + " is not in a world of " +
                                std::to_string(world));
  }
  reset();
}

void EpochSampler::set_epoch(int64_t epoch, size_t skip) {
  epoch_ = epoch;
  skip_ = skip;
  reset();
}

// Equal shards, so that every process takes the same number of steps: the last
// size % world examples of each epoch's permutation are left out.
size_t EpochSampler::shard_size() const { return world_ == 1 ? size_ : size_ / world_; }

void EpochSampler::reset(torch::optional<size_t> new_size) {
  if (new_size) size_ = *new_size;
  std::vector<size_t> all(size_);
  std::iota(all.begin(), all.end(), size_t(0));
  if (shuffle_) {
    // Fisher-Yates with draws keyed by (seed, epoch): the same order everywhere.
    Draws draws(mix_seed(seed_, static_cast<uint64_t>(epoch_), 0x5A3D1E));
    for (size_t i = size_; i > 1; --i) std::swap(all[i - 1], all[static_cast<size_t>(draws.below(static_cast<int64_t>(i)))]);
  }
  order_.clear();
  for (size_t i = rank_; order_.size() < shard_size(); i += world_) order_.push_back(all[i]);
  position_ = std::min(skip_, order_.size());
}

torch::optional<std::vector<size_t>> EpochSampler::next(size_t batch_size) {
  if (position_ >= order_.size()) return torch::nullopt;
  const size_t end = std::min(order_.size(), position_ + batch_size);
  std::vector<size_t> out(order_.begin() + static_cast<std::ptrdiff_t>(position_),
                          order_.begin() + static_cast<std::ptrdiff_t>(end));
  position_ = end;
  return out;
}

void EpochSampler::save(torch::serialize::OutputArchive& archive) const {
  archive.write("epoch", torch::tensor(epoch_));
  archive.write("position", torch::tensor(static_cast<int64_t>(position_)));
}

void EpochSampler::load(torch::serialize::InputArchive& archive) {
  torch::Tensor epoch, position;
  archive.read("epoch", epoch);
  archive.read("position", position);
  set_epoch(epoch.item<int64_t>());
  position_ = static_cast<size_t>(position.item<int64_t>());
}

}  // namespace alexnet::data
