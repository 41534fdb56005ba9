#include <alexnet/data/dataset.h>
#include <alexnet/network/distributed.h>
#include <alexnet/network/error.h>
#include <alexnet/train/inference.h>

#include "network/json.h"
#include "train/evaluate.h"

#include <torch/data/dataloader.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace alexnet {
namespace {

// Images rank, rank + world, ... of a source: one process's part of an evaluation.
class ShardSource : public data::Source {
 public:
  ShardSource(std::shared_ptr<data::Source> source, size_t rank, size_t world)
      : source_(std::move(source)), rank_(rank), world_(world) {}
  size_t size() const override { return (source_->size() + world_ - 1 - rank_) / world_; }
  int64_t label(size_t i) const override { return source_->label(at(i)); }
  data::Image image(size_t i, int64_t side) const override { return source_->image(at(i), side); }
  std::string describe(size_t i) const override { return source_->describe(at(i)); }
  const std::vector<std::string>& classes() const override { return source_->classes(); }

 private:
  size_t at(size_t i) const { return rank_ + i * world_; }
  std::shared_ptr<data::Source> source_;
  size_t rank_, world_;
};

data::TransformOptions transforms(const Preprocessing& pre, bool ten_crop, data::OnError on_error) {
  return data::TransformOptions()
      .resize(pre.resize)
      .crop(pre.crop)
      .mode(ten_crop ? data::Mode::kTenCrop : data::Mode::kCenter)
      .pca_std(0)
      .on_error(on_error);
}

// How inference runs on a model: its precision and the input's form for it.
struct Compute {
  Precision precision;
  c10::Device device;
  bool channels_last;
};

Compute compute_for(const AlexNetImpl& model, Precision asked) {
  const auto device = model.tower_devices().front();
  const auto precision = inference_precision(model, asked);
  return {precision, device, runs_channels_last(device)};
}

// `layer`'s activations for the network input `x` (float32, as Preprocessing::apply
// gives it), as float32.
torch::Tensor run(AlexNet& model, const Compute& c, torch::Tensor x, Layer layer) {
  const AutocastGuard autocast(c.device.type(), c.precision);
  if (c.precision == Precision::kBf16) x = x.to(torch::kBFloat16);
  if (c.precision == Precision::kFp16) x = x.to(torch::kHalf);
  if (c.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  return model->forward_to(x, layer).to(torch::kFloat);
}

Evaluation evaluate_here(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                         const InferenceOptions& options) {
  const auto classes = model->options.num_classes();
  Evaluation e;
  std::vector<double> correct(static_cast<size_t>(classes), 0.0);
  e.per_class_images.assign(static_cast<size_t>(classes), 0);
  double loss = 0, top1 = 0, top5 = 0;
  e.skipped = for_each_output(model, source, pre, Layer::kLogits, options,
                              [&](const data::Batch& batch, const torch::Tensor& logits) {
    const auto n = batch.labels.size(0);
    auto probabilities = logits.softmax(1);
    if (options.ten_crop()) probabilities = probabilities.view({n, 10, classes}).mean(1);  // Section 4.1
    probabilities = probabilities.to(torch::kCPU);
    const auto& y = batch.labels;
    loss -= probabilities.gather(1, y.unsqueeze(1)).clamp_min(1e-12).log().sum().item<double>();
    const auto best = std::get<1>(probabilities.topk(std::min<int64_t>(5, classes), 1));
    const auto hit1 = best.select(1, 0).eq(y);
    top1 += hit1.sum().item<double>();
    top5 += best.eq(y.unsqueeze(1)).any(1).sum().item<double>();
    const auto labels = y.accessor<int64_t, 1>();
    const auto hits = hit1.accessor<bool, 1>();
    for (int64_t i = 0; i < n; ++i) {
      ++e.per_class_images[static_cast<size_t>(labels[i])];
      correct[static_cast<size_t>(labels[i])] += hits[i];
    }
    e.images += n;
  });
  if (e.images == 0) throw std::runtime_error("evaluation: no image could be read");
  e.loss = loss / e.images;
  e.top1 = top1 / e.images;
  e.top5 = top5 / e.images;
  for (size_t c = 0; c < correct.size(); ++c) {
    e.per_class.push_back(e.per_class_images[c] ? correct[c] / e.per_class_images[c] : std::nan(""));
  }
  return e;
}

}  // namespace

void validate(const InferenceOptions& o) {
  if (o.batch_size() <= 0) throw OptionError("batch_size", "must be positive, got " + std::to_string(o.batch_size()));
  if (o.workers() < 0) throw OptionError("workers", "must be 0 or more, got " + std::to_string(o.workers()));
}

Precision inference_precision(const AlexNetImpl& model, Precision asked) {
  const auto device = model.tower_devices().front();
  const auto precision = resolve(asked, {device});  // fp16 refused off CUDA there
  const auto stored = model.parameters().front().scalar_type();
  const auto wanted = precision == Precision::kBf16 ? torch::kBFloat16 : torch::kHalf;
  if ((stored == torch::kBFloat16 || stored == torch::kHalf) && stored != wanted) {
    throw OptionError("precision", name_of(precision) + " asked, but the model's weights are stored in " +
                                       (stored == torch::kBFloat16 ? "bf16" : "fp16") +
                                       " (load it at the precision it infers in)");
  }
  return precision;
}

std::string Evaluation::to_json(const std::vector<std::string>& classes) const {
  detail::Json out;
  out["images"] = images;
  out["top1"] = detail::number(top1);
  out["top5"] = detail::number(top5);
  out["loss"] = detail::number(loss);
  out["skipped"] = skipped;
  out["per_class"] = detail::Json::array();
  for (size_t c = 0; c < per_class.size(); ++c) {
    detail::Json row;
    row["index"] = c;
    row["label"] = c < classes.size() ? classes[c] : std::to_string(c);
    row["images"] = per_class_images[c];
    row["top1"] = detail::number(per_class[c]);
    out["per_class"].push_back(row);
  }
  return detail::dump(out);
}

std::string Evaluation::to_text(const std::vector<std::string>& classes) const {
  std::string out = c10::str("images ", images, "\n");
  char line[256];
  std::snprintf(line, sizeof line, "top-1 %.2f%%\ntop-5 %.2f%%\nloss %.4f\n", 100 * top1, 100 * top5, loss);
  out += line;
  for (size_t c = 0; c < per_class.size(); ++c) {
    std::snprintf(line, sizeof line, "  %-24s %6.2f%% of %lld\n",
                  (c < classes.size() ? classes[c] : std::to_string(c)).c_str(), 100 * per_class[c],
                  static_cast<long long>(per_class_images[c]));
    out += line;
  }
  return out;
}

int64_t for_each_output(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                        Layer layer, const InferenceOptions& options,
                        const std::function<void(const data::Batch&, const torch::Tensor&)>& visit) {
  validate(options);
  data::ImageDataset dataset(source, transforms(pre, options.ten_crop(), options.on_error()));
  data::EpochSampler sampler(source->size(), 0, /*shuffle=*/false);
  auto loader = torch::data::make_data_loader(
      dataset, sampler,
      torch::data::DataLoaderOptions(static_cast<size_t>(options.batch_size()))
          .workers(static_cast<size_t>(options.workers())));
  const auto compute = compute_for(*model, options.precision());
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  int64_t skipped = 0;
  for (auto& batch : *loader) {
    if (options.stop() && options.stop()->load()) {
      model->train(was_training);
      throw Stopped("inference over " + source->name());
    }
    skipped += batch.skipped;
    if (batch.labels.size(0) > 0) {
      visit(batch, run(model, compute, data::normalize(batch, pre, compute.device), layer));
    }
  }
  model->train(was_training);
  return skipped;
}

Evaluation evaluate(AlexNet& model, const std::shared_ptr<data::Source>& data, const Preprocessing& pre,
                    const InferenceOptions& options, ProcessGroup* group) {
  // Labels by name: the data may hold the model's classes in another order, or some.
  const auto source = pre.classes.empty() ? data : data::match_classes(data, pre.classes);
  return detail::evaluate_matched(model, source, pre, options, group);
}

Evaluation detail::evaluate_matched(AlexNet& model, const std::shared_ptr<data::Source>& source,
                                    const Preprocessing& pre, const InferenceOptions& options, ProcessGroup* group) {
  if (!group || group->size() <= 1) return evaluate_here(model, source, pre, options);
  const auto part = std::make_shared<ShardSource>(source, static_cast<size_t>(group->rank()),
                                                  static_cast<size_t>(group->size()));
  Evaluation e;
  if (part->size() > 0) {
    try {
      e = evaluate_here(model, part, pre, options);
    } catch (const std::runtime_error&) {
      if (options.on_error() != data::OnError::kSkip) throw;  // every image of this part unreadable: counted below
    }
  }
  // Counts, not means: images, loss, top-1, top-5 sums, skipped, then per class.
  const auto classes = static_cast<size_t>(model->options.num_classes());
  e.per_class.resize(classes, 0);
  e.per_class_images.resize(classes, 0);
  std::vector<double> counts{double(e.images), e.loss * e.images, e.top1 * e.images, e.top5 * e.images,
                             double(e.skipped)};
  for (size_t c = 0; c < classes; ++c) {
    counts.push_back(e.per_class_images[c] ? e.per_class[c] * e.per_class_images[c] : 0.0);
    counts.push_back(double(e.per_class_images[c]));
  }
  const auto total = torch::tensor(counts, torch::kDouble);
  group->sum(total);
  const auto t = total.accessor<double, 1>();
  Evaluation all;
  all.images = static_cast<int64_t>(std::llround(t[0]));
  if (all.images == 0) throw std::runtime_error("evaluation: no image could be read");
  all.loss = t[1] / t[0];
  all.top1 = t[2] / t[0];
  all.top5 = t[3] / t[0];
  all.skipped = static_cast<int64_t>(std::llround(t[4]));
  for (size_t c = 0; c < classes; ++c) {
    const double images = t[6 + 2 * c];
    all.per_class_images.push_back(static_cast<int64_t>(std::llround(images)));
    all.per_class.push_back(images > 0 ? t[5 + 2 * c] / images : std::nan(""));
  }
  return all;
}

torch::Tensor classify_logits(AlexNet& model, const std::vector<std::string>& images, const Preprocessing& pre,
                              const InferenceOptions& options) {
  const auto compute = compute_for(*model, options.precision());
  auto source = data::open_image_files(images);
  data::ImageDataset dataset(source, transforms(pre, options.ten_crop(), data::OnError::kFail));
  std::vector<size_t> all(images.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  const auto batch = dataset.get_batch(all);
  model->eval();
  torch::NoGradGuard no_grad;
  auto logits = run(model, compute, data::normalize(batch, pre, compute.device), Layer::kLogits).to(torch::kCPU);
  if (options.ten_crop()) logits = logits.view({static_cast<int64_t>(images.size()), 10, -1});
  return logits;
}

torch::Tensor classify(AlexNet& model, const std::vector<std::string>& images, const Preprocessing& pre,
                       const InferenceOptions& options) {
  return probabilities_of(classify_logits(model, images, pre, options));
}

torch::Tensor probabilities_of(const torch::Tensor& logits) {
  if (logits.dim() == 3) return logits.softmax(-1).mean(1);
  if (logits.dim() != 2) throw std::invalid_argument("probabilities_of: logits [N, classes] or [N, 10, classes], got " + c10::str(logits.sizes()));
  return logits.softmax(-1);
}

std::string Classification::to_json() const {
  detail::Json out;
  out["image"] = image;
  out["top"] = detail::Json::array();
  for (const auto& c : top) {
    detail::Json row;
    row["label"] = c.label;
    row["index"] = c.index;
    row["probability"] = c.probability;
    out["top"].push_back(row);
  }
  if (!logits.empty()) out["logits"] = logits;
  return detail::dump(out);
}

std::string Classification::to_text() const {
  std::string out = image + "\n";
  char line[512];
  for (const auto& c : top) {
    std::snprintf(line, sizeof line, "  %6.2f%%  %s (%lld)\n", 100 * c.probability, c.label.c_str(),
                  static_cast<long long>(c.index));
    out += line;
  }
  if (!logits.empty()) {
    out += "  logits";
    for (const double v : logits) {
      std::snprintf(line, sizeof line, " %.9g", v);
      out += line;
    }
    out += "\n";
  }
  return out;
}

std::vector<Classification> top_classes(const torch::Tensor& probabilities, const std::vector<std::string>& images,
                                        const std::vector<std::string>& classes, int64_t k) {
  const auto n = std::min<int64_t>(k, probabilities.size(1));
  const auto [values, indices] = probabilities.to(torch::kCPU, torch::kDouble).topk(n, 1);
  std::vector<Classification> out;
  for (size_t i = 0; i < images.size(); ++i) {
    Classification c;
    c.image = images[i];
    for (int64_t j = 0; j < n; ++j) {
      const auto index = indices[static_cast<int64_t>(i)][j].item<int64_t>();
      const auto label = static_cast<size_t>(index) < classes.size() ? classes[static_cast<size_t>(index)]
                                                                      : std::to_string(index);
      c.top.push_back({label, index, values[static_cast<int64_t>(i)][j].item<double>()});
    }
    out.push_back(std::move(c));
  }
  return out;
}

torch::Tensor extract_features(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                               Layer layer, const InferenceOptions& options) {
  std::vector<torch::Tensor> rows;
  for_each_output(model, source, pre, layer, InferenceOptions(options).ten_crop(false),
                  [&](const data::Batch&, const torch::Tensor& out) { rows.push_back(out.to(torch::kCPU, torch::kFloat)); });
  return torch::cat(rows);
}

}  // namespace alexnet
