#include <alexnet/data/statistics.h>
#include <alexnet/network/error.h>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "network/atomic_file.h"
#include "network/json.h"

#include <atomic>
#include <cstdio>
#include <iomanip>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace alexnet::data {
namespace {

constexpr const char* kFormat = "alexnet-stats-1";

// Sums over the images one worker saw; merged at the end.
struct Sums {
  std::vector<double> image;  // S x S x 3, interleaved like the pixels
  double rgb[3] = {0, 0, 0};
  double cross[3][3] = {{0}};
  int64_t images = 0;
  int64_t skipped = 0;
};

void add_image(Sums& sums, const Image& image) {
  const size_t n = static_cast<size_t>(image.height * image.width);
  // Per-image partial sums in double, then folded in: a long image never loses
  // precision in float, and the hot loop stays simple.
  double rgb[3] = {0, 0, 0};
  double cross[3][3] = {{0}};
  const uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < n; ++i, p += 3) {
    const double v[3] = {double(p[0]), double(p[1]), double(p[2])};
    for (int a = 0; a < 3; ++a) {
      rgb[a] += v[a];
      for (int b = a; b < 3; ++b) cross[a][b] += v[a] * v[b];
    }
  }
  for (size_t i = 0; i < 3 * n; ++i) sums.image[i] += image.pixels[i];
  for (int a = 0; a < 3; ++a) {
    sums.rgb[a] += rgb[a];
    for (int b = a; b < 3; ++b) sums.cross[a][b] += cross[a][b];
  }
  ++sums.images;
}

// A float64 tensor of 1 or 2 dimensions as nested JSON arrays.
detail::Json json_array(const torch::Tensor& t) {
  const auto v = t.to(torch::kDouble).contiguous();
  if (v.dim() == 1) {
    const auto a = v.accessor<double, 1>();
    std::vector<double> out(a.data(), a.data() + a.size(0));
    return out;
  }
  detail::Json rows = detail::Json::array();
  for (int64_t i = 0; i < v.size(0); ++i) rows.push_back(json_array(v[i]));
  return rows;
}

}  // namespace

Statistics compute_statistics(const Source& source, int64_t side, int64_t workers, OnError on_error,
                              int64_t* skipped, const std::atomic<bool>* stop) {
  if (side < 1 || side > 4096) throw OptionError("size", "must be between 1 and 4096, got " + std::to_string(side));
  if (workers < 0) throw OptionError("workers", "must be 0 or more, got " + std::to_string(workers));
  const size_t count = source.size();
  std::vector<Sums> partial(static_cast<size_t>(std::max<int64_t>(1, workers)));
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&](Sums& sums) {
    sums.image.assign(static_cast<size_t>(side * side * 3), 0.0);
    for (size_t i = next++; i < count; i = next++) {
      if (stop && stop->load()) break;
      try {
        add_image(sums, to_rgb(source.image(i, side)));
      } catch (...) {
        if (on_error == OnError::kSkip) {
          ++sums.skipped;
          continue;
        }
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = count;
      }
    }
  };
  std::vector<std::thread> threads;
  for (size_t w = 1; w < partial.size(); ++w) threads.emplace_back(work, std::ref(partial[w]));
  work(partial[0]);
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
  if (stop && stop->load()) throw Stopped("statistics");

  Sums total = std::move(partial[0]);
  for (size_t w = 1; w < partial.size(); ++w) {
    for (size_t i = 0; i < total.image.size(); ++i) total.image[i] += partial[w].image[i];
    for (int a = 0; a < 3; ++a) {
      total.rgb[a] += partial[w].rgb[a];
      for (int b = 0; b < 3; ++b) total.cross[a][b] += partial[w].cross[a][b];
    }
    total.images += partial[w].images;
    total.skipped += partial[w].skipped;
  }
  if (skipped) *skipped = total.skipped;
  if (total.images == 0) throw std::runtime_error("statistics: no image could be read");

  const auto options = torch::TensorOptions(torch::kDouble);
  Statistics stats;
  stats.images = total.images;
  stats.mean_image = torch::from_blob(total.image.data(), {side, side, 3}, options)
                         .permute({2, 0, 1})
                         .div(static_cast<double>(total.images))
                         .contiguous();
  const double pixels = static_cast<double>(total.images) * static_cast<double>(side * side);
  stats.mean_rgb = torch::tensor({total.rgb[0], total.rgb[1], total.rgb[2]}, options) / pixels;
  auto covariance = torch::empty({3, 3}, options);
  const auto m = stats.mean_rgb.accessor<double, 1>();
  for (int a = 0; a < 3; ++a) {
    for (int b = 0; b < 3; ++b) {
      const double sum = a <= b ? total.cross[a][b] : total.cross[b][a];
      covariance[a][b] = sum / pixels - m[a] * m[b];
    }
  }
  // eigh: ascending eigenvalues, eigenvectors in columns; we keep rows, descending.
  const auto [values, vectors] = torch::linalg_eigh(covariance);
  // Clamped: rounding can leave a degenerate direction (gray data) slightly negative.
  stats.eigenvalues = values.flip(0).clamp_min(0.0).contiguous();
  stats.eigenvectors = vectors.t().flip(0).contiguous();
  return stats;
}

std::string Statistics::to_json() const {
  detail::Json out;
  out["images"] = images;
  out["mean_rgb"] = json_array(mean_rgb);
  out["eigenvalues"] = json_array(eigenvalues);
  out["eigenvectors"] = json_array(eigenvectors);
  return detail::dump(out);
}

void Statistics::save(const std::string& path) const {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string(kFormat)));
  archive.write("mean_image", mean_image);
  archive.write("mean_rgb", mean_rgb);
  archive.write("eigenvalues", eigenvalues);
  archive.write("eigenvectors", eigenvectors);
  archive.write("images", torch::tensor(images));
  detail::write_atomically(
      path, [&](const detail::ByteSink& out) { archive.save_to([&](const void* data, size_t n) { return out(data, n); }); },
      "statistics");
}

Statistics Statistics::load(const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const std::exception&) {
    throw std::runtime_error("statistics '" + path + "': not a readable statistics file (alexnet stats writes them)");
  }
  c10::IValue format;
  if (!archive.try_read("format", format) || !format.isString() || format.toStringRef() != kFormat) {
    throw std::runtime_error("statistics '" + path + "': not a statistics file (alexnet stats writes them)");
  }
  Statistics s;
  torch::Tensor images;
  archive.read("mean_image", s.mean_image);
  archive.read("mean_rgb", s.mean_rgb);
  archive.read("eigenvalues", s.eigenvalues);
  archive.read("eigenvectors", s.eigenvectors);
  archive.read("images", images);
  s.images = images.item<int64_t>();
  if (s.mean_rgb.numel() != 3 || s.eigenvalues.numel() != 3 || s.eigenvectors.sizes() != torch::IntArrayRef({3, 3})) {
    throw std::runtime_error("statistics '" + path + "': malformed");
  }
  return s;
}

}  // namespace alexnet::data
