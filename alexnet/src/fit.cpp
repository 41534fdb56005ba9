#include <alexnet/error.h>
#include <alexnet/inference.h>
#include <alexnet/runtime.h>
#include <alexnet/train.h>

#include "atomic_file.h"
#include "trainer_impl.h"

#include <torch/data/dataloader.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

namespace alexnet {
namespace fs = std::filesystem;

Trainer::Trainer(AlexNet model, std::shared_ptr<data::Source> train, std::shared_ptr<data::Source> val,
                 data::Statistics stats, TrainOptions options)
    : Trainer(std::move(model), options) {
  auto& m = *impl_;
  m.train = std::move(train);
  m.val = std::move(val);
  m.stats = std::move(stats);
  const auto classes = static_cast<int64_t>(m.train->classes().size());
  if (classes != m.model->options.num_classes()) {
    throw std::invalid_argument("the training data has " + std::to_string(classes) + " classes but the model has " +
                                std::to_string(m.model->options.num_classes()) + " outputs");
  }
  // The validation data's labels by name: its classes may come in another order, or be some of them.
  if (m.val) m.val = data::match_classes(m.val, m.train->classes());
  const auto input = m.model->options.input_size();
  if (input > options.resize()) {
    throw OptionError("resize", std::to_string(options.resize()) + " is smaller than the model's input size " +
                                    std::to_string(input));
  }
  const auto mean = options.mean().value_or(
      m.model->options.architecture() == Architecture::kTwoTower ? Mean::kImage : Mean::kChannels);
  m.pre = Preprocessing::from_statistics(m.train->classes(), mean, m.stats.mean_image, m.stats.mean_rgb,
                                         options.resize(), input);
}


void Trainer::Impl::check_replicas(const TrainHooks& hooks) const {
  // Every replica's parameters as summed bit patterns per tensor: equal on all ranks
  // exactly when the replicas hold the same weights.
  std::vector<int64_t> local;
  for (const auto& p : model->parameters()) {
    local.push_back(p.detach().to(torch::kCPU).contiguous().view(torch::kInt).to(torch::kLong).sum().item<int64_t>());
  }
  const auto all = torch::tensor(local, torch::kLong);
  group->sum(all);
  if (!torch::equal(all, torch::tensor(local, torch::kLong) * group->size())) {
    throw std::runtime_error("data parallel: the replicas' weights differ after epoch " + std::to_string(epoch));
  }
  if (hooks.on_info) {
    hooks.on_info("data parallel: the " + std::to_string(group->size()) + " replicas' weights are identical after epoch " +
                  std::to_string(epoch));
  }
}

Trainer::Outcome Trainer::fit(const std::string& run_dir, const TrainHooks& hooks) {
  auto& m = *impl_;
  if (!m.train) throw std::logic_error("Trainer::fit: this trainer was made without data");
  if (m.writer()) fs::create_directories(run_dir);
  const int64_t crop = m.model->options.input_size();
  const int64_t batch_size = m.options.batch_size();
  const auto device = m.device();
  data::ImageDataset train_set(m.train, data::TransformOptions()
                                            .resize(m.options.resize())
                                            .crop(crop)
                                            .pca_std(m.options.pca_std())
                                            .seed(m.options.seed())
                                            .on_error(m.options.on_error()),
                               m.stats);
  const size_t rank = m.group ? static_cast<size_t>(m.group->rank()) : 0;
  const size_t world = m.group ? static_cast<size_t>(m.group->size()) : 1;
  if (m.parallel() && hooks.on_info) {
    hooks.on_info("global batch " + std::to_string(batch_size * static_cast<int64_t>(world)) + " (" +
                  std::to_string(batch_size) + " per rank x " + std::to_string(world) + " ranks)");
  }
  const auto inference = InferenceOptions()
                              .ten_crop(m.options.ten_crop())
                              .batch_size(batch_size)
                              .workers(m.options.workers())
                              .on_error(m.options.on_error());

  while (m.epoch < m.options.epochs()) {
    data::EpochSampler sampler(m.train->size(), m.options.seed(), /*shuffle=*/true, rank, world);
    sampler.set_epoch(m.epoch, static_cast<size_t>(m.step * batch_size));
    train_set.set_epoch(m.epoch);
    const auto shard = static_cast<int64_t>(sampler.shard_size());
    const int64_t steps = (shard + batch_size - 1) / batch_size;
    auto loader = torch::data::make_data_loader(
        train_set, sampler,
        torch::data::DataLoaderOptions(static_cast<size_t>(batch_size))
            .workers(static_cast<size_t>(m.options.workers()))
            .max_jobs(static_cast<size_t>(2 * m.options.workers() + 1)));
    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    for (auto& batch : *loader) {
      if (m.parallel()) {
        // Each rank its own dropout, reproducible after a resume without saving every
        // rank's generator.
        manual_seed(mix_seed(m.options.seed(), rank, static_cast<uint64_t>(m.epoch), static_cast<uint64_t>(m.step)));
      }
      const auto x = data::normalize(batch, m.pre, device);
      const auto result = step(x, batch.labels, hooks.stop && hooks.stop->load());
      if (!result.warning.empty() && hooks.on_warning) hooks.on_warning(result.warning);
      if (std::isfinite(result.loss)) {  // an overflowing float16 step counts in no figure
        const auto n = static_cast<double>(batch.labels.size(0));
        m.loss_sum += result.loss * n;
        m.correct += static_cast<double>(result.correct);
        m.seen += n;
      }
      if (hooks.on_step) hooks.on_step(m.epoch + 1, m.step, steps, result.loss, m.seen / (m.seconds + elapsed()));
      if (result.stop) {
        m.seconds += elapsed();
        if (m.writer()) save((fs::path(run_dir) / "last.pt").string());
        return Outcome::kStopped;
      }
    }
    m.seconds += elapsed();

    EpochMetrics metrics;
    metrics.epoch = m.epoch + 1;
    double loss_sum = m.loss_sum, correct = m.correct, seen = m.seen;
    if (m.parallel()) {  // the whole world's figures, not an average of averages
      const auto counts = torch::tensor({loss_sum, correct, seen}, torch::kDouble);
      m.group->sum(counts);
      loss_sum = counts[0].item<double>();
      correct = counts[1].item<double>();
      seen = counts[2].item<double>();
    }
    metrics.train_loss = seen > 0 ? loss_sum / seen : std::nan("");
    metrics.train_top1 = seen > 0 ? correct / seen : std::nan("");
    metrics.lr = m.lr;
    metrics.images_per_second = m.seconds > 0 ? seen / m.seconds : 0;
    metrics.val_loss = metrics.val_top1 = metrics.val_top5 = std::numeric_limits<double>::quiet_NaN();
    bool improved = !m.val;  // without validation data the latest weights are the best known
    if (m.val) {
      const auto e = evaluate(m.model, m.val, m.pre, inference, m.group);
      metrics.val_loss = e.loss;
      metrics.val_top1 = e.top1;
      metrics.val_top5 = e.top5;
      improved = 1 - e.top1 < m.best_error;
      if (improved) {
        m.best_error = 1 - e.top1;
        m.bad_epochs = 0;
      } else {
        ++m.bad_epochs;
      }
    }
    metrics.seconds = m.seconds;
    if (m.options.lr_policy() == LrPolicy::kPlateau && m.bad_epochs >= m.options.patience()) {
      m.lr *= 0.1;  // Section 5: "divide the learning rate by 10"
      m.bad_epochs = 0;
    } else if (m.options.lr_policy() == LrPolicy::kStep && (m.epoch + 1) % m.options.step_epochs() == 0) {
      m.lr *= m.options.lr_factor();
    }
    ++m.epoch;
    m.step = 0;
    m.loss_sum = m.correct = m.seen = m.seconds = 0;
    m.history.push_back(metrics);
    if (m.writer()) {
      save((fs::path(run_dir) / "last.pt").string());
      if (improved) save_for_inference((fs::path(run_dir) / "best.pt").string());
      std::string lines;
      for (const auto& h : m.history) lines += h.to_json() + "\n";
      detail::write_file_atomically((fs::path(run_dir) / "metrics.jsonl").string(), lines, "metrics");
    }
    if (m.parallel()) m.check_replicas(hooks);
    if (hooks.on_epoch) hooks.on_epoch(metrics);
  }
  return Outcome::kFinished;
}

}  // namespace alexnet
