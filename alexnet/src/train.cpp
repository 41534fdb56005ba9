#include <alexnet/train.h>
#include <alexnet/pytorch.h>
#include <alexnet/runtime.h>

#include "atomic_file.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/data/dataloader.h>
#include <torch/nn/functional/loss.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <iomanip>
#include <limits>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace alexnet {
namespace fs = std::filesystem;
namespace {

// A loss within this of ln(classes) for this many steps in a row is "flat".
constexpr double kFlatTolerance = 0.02;
constexpr int64_t kFlatSteps = 100;
// float16: this many steps in a row skipped by the loss scaler (its scale halved each
// time, to 2^-34 from 2^16) means the run has diverged, not that the scale is high.
constexpr int64_t kMaxSkippedSteps = 50;

// The default generators of the CUDA devices `model` runs on, by checkpoint key.
std::vector<std::pair<std::string, at::Generator>> cuda_generators(const AlexNetImpl& model) {
  std::vector<std::pair<std::string, at::Generator>> out;
  for (const auto& d : model.tower_devices()) {
    if (!d.is_cuda()) continue;
    const c10::Device device(c10::kCUDA, d.has_index() ? d.index() : 0);
    const auto key = "rng/" + device.str();
    if (std::none_of(out.begin(), out.end(), [&](const auto& g) { return g.first == key; })) {
      out.emplace_back(key, at::globalContext().defaultGenerator(device));
    }
  }
  return out;
}

std::string number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream out;
  out << std::setprecision(8) << v;
  return out.str();
}

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

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

data::Statistics mean_only(const torch::Tensor& mean_rgb) {
  data::Statistics s;
  s.mean_rgb = mean_rgb;
  return s;
}

}  // namespace

std::string json_escape(const std::string& text) {
  std::string out;
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char code[8];
      std::snprintf(code, sizeof code, "\\u%04x", ch);
      out += code;
    } else {
      out += ch;
    }
  }
  return out;
}

std::string to_string(LrPolicy p) {
  return p == LrPolicy::kPlateau ? "plateau" : p == LrPolicy::kStep ? "step" : "fixed";
}

LrPolicy lr_policy_from_string(const std::string& name) {
  if (name == "plateau") return LrPolicy::kPlateau;
  if (name == "step") return LrPolicy::kStep;
  if (name == "fixed") return LrPolicy::kFixed;
  throw std::invalid_argument("unknown learning-rate policy '" + name + "' (expected one of: plateau, step, fixed)");
}

std::string EpochMetrics::to_json() const {
  std::ostringstream out;
  out << "{\"epoch\":" << epoch << ",\"train_loss\":" << number(train_loss) << ",\"train_top1\":" << number(train_top1)
      << ",\"val_loss\":" << number(val_loss) << ",\"val_top1\":" << number(val_top1)
      << ",\"val_top5\":" << number(val_top5) << ",\"lr\":" << number(lr)
      << ",\"images_per_second\":" << number(images_per_second) << ",\"seconds\":" << number(seconds) << "}";
  return out.str();
}

EpochMetrics EpochMetrics::from_json(const std::string& line) {
  auto field = [&](const std::string& key) {
    const auto at = line.find("\"" + key + "\":");
    if (at == std::string::npos) throw std::invalid_argument("metrics line lacks '" + key + "': " + line);
    const auto text = line.substr(at + key.size() + 3);
    return text.rfind("null", 0) == 0 ? std::nan("") : std::stod(text);
  };
  EpochMetrics m;
  m.epoch = static_cast<int64_t>(field("epoch"));
  m.train_loss = field("train_loss");
  m.train_top1 = field("train_top1");
  m.val_loss = field("val_loss");
  m.val_top1 = field("val_top1");
  m.val_top5 = field("val_top5");
  m.lr = field("lr");
  m.images_per_second = field("images_per_second");
  m.seconds = field("seconds");
  return m;
}

Preprocessing Preprocessing::torchvision(std::vector<std::string> classes) {
  Preprocessing p;
  p.classes = std::move(classes);
  // torchvision's ImageNet statistics, given on the 0..1 scale, here on 0..255.
  p.mean_rgb = torch::tensor({0.485, 0.456, 0.406}, torch::kDouble) * 255;
  p.std_rgb = torch::tensor({0.229, 0.224, 0.225}, torch::kDouble) * 255;
  p.resize = 256;
  p.crop = 224;
  return p;
}

torch::Tensor Preprocessing::apply(const data::Batch& batch, const c10::Device& device) const {
  auto x = data::normalize(batch, mean_only(mean_rgb), device);
  if (std_rgb.defined()) x.div_(std_rgb.to(torch::kFloat).to(device).view({1, 3, 1, 1}));
  return x;
}

void Preprocessing::add_to(CheckpointExtras& extras) const {
  extras.strings["classes"] = join(classes);
  extras.strings["preprocessing"] = "resize=" + std::to_string(resize) + "\ncrop=" + std::to_string(crop) + "\n";
  extras.tensors["mean_rgb"] = mean_rgb.to(torch::kDouble);
  if (std_rgb.defined()) extras.tensors["std_rgb"] = std_rgb.to(torch::kDouble);
}

Preprocessing Preprocessing::from(const CheckpointExtras& extras, const std::string& path) {
  const auto classes = extras.strings.find("classes");
  const auto pre = extras.strings.find("preprocessing");
  const auto mean = extras.tensors.find("mean_rgb");
  if (classes == extras.strings.end() || pre == extras.strings.end() || mean == extras.tensors.end()) {
    throw std::runtime_error("checkpoint '" + path +
                             "': has no preprocessing (class names, mean, sizes); was it written by alexnet train?");
  }
  Preprocessing p;
  p.classes = split_lines(classes->second);
  p.mean_rgb = mean->second;
  const auto std_rgb = extras.tensors.find("std_rgb");
  if (std_rgb != extras.tensors.end()) p.std_rgb = std_rgb->second;
  if (p.mean_rgb.numel() != 3 || (p.std_rgb.defined() && (p.std_rgb.numel() != 3 || !(p.std_rgb > 0).all().item<bool>()))) {
    throw std::runtime_error("checkpoint '" + path + "': malformed preprocessing (mean_rgb or std_rgb)");
  }
  for (const auto& line : split_lines(pre->second)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const auto value = std::stoll(line.substr(eq + 1));
    if (line.substr(0, eq) == "resize") p.resize = value;
    if (line.substr(0, eq) == "crop") p.crop = value;
  }
  return p;
}

AlexNet convert_torchvision(const std::string& weights, const std::string& checkpoint,
                            std::vector<std::string> classes) {
  auto model = from_torchvision(read_state_dict(weights), weights);
  const auto outputs = model->options.num_classes();
  if (classes.empty()) {
    for (int64_t c = 0; c < outputs; ++c) classes.push_back(std::to_string(c));
  } else if (static_cast<int64_t>(classes.size()) != outputs) {
    throw std::invalid_argument(std::to_string(classes.size()) + " class names for the " + std::to_string(outputs) +
                                " outputs of '" + weights + "'");
  }
  CheckpointExtras extras;
  Preprocessing::torchvision(std::move(classes)).add_to(extras);
  save(*model, checkpoint, extras);
  return model;
}

std::pair<AlexNet, Preprocessing> load_for_inference(const std::string& path) {
  CheckpointExtras extras;
  auto model = load(path, {c10::Device(c10::kCPU)}, &extras);
  return {model, Preprocessing::from(extras, path)};
}

Trainer::Trainer(AlexNet model, std::shared_ptr<data::Source> train, std::shared_ptr<data::Source> val,
                 data::Statistics stats, TrainOptions options)
    : model_(std::move(model)), train_(std::move(train)), val_(std::move(val)), stats_(std::move(stats)),
      options_(options), lr_(options.lr()) {
  const auto classes = static_cast<int64_t>(train_->classes().size());
  if (classes != model_->options.num_classes()) {
    throw std::invalid_argument("the training data has " + std::to_string(classes) + " classes but the model has " +
                                std::to_string(model_->options.num_classes()) + " outputs");
  }
  if (val_ && val_->classes().size() != train_->classes().size()) {
    throw std::invalid_argument("the validation data has " + std::to_string(val_->classes().size()) +
                                " classes, the training data " + std::to_string(classes));
  }
  if (options_.batch_size() <= 0 || options_.epochs() <= 0 || options_.lr() <= 0) {
    throw std::invalid_argument("batch size, epochs and learning rate must be positive");
  }
  const auto device = model_->tower_devices().front();
  if (options_.precision() == Precision::kFp16 && !device.is_cuda()) {
    throw std::invalid_argument("--precision fp16 needs a CUDA device; on CPUs use bf16");
  }
  scaler_ = LossScaler(options_.precision() == Precision::kFp16);
  if (options_.channels_last()) {
    torch::NoGradGuard no_grad;
    for (auto& p : model_->parameters()) {
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
  if (model_->options.input_size() > options_.resize()) {
    throw std::invalid_argument("the model's input size " + std::to_string(model_->options.input_size()) +
                                " exceeds the resize " + std::to_string(options_.resize()));
  }
}

void Trainer::step_update() {
  torch::NoGradGuard no_grad;
  const double momentum = options_.momentum(), decay = options_.weight_decay() * lr_;
  for (auto& item : model_->named_parameters()) {
    auto& w = item.value();
    if (!w.grad().defined()) continue;
    auto found = momentum_.find(item.key());
    if (found == momentum_.end()) found = momentum_.emplace(item.key(), torch::zeros_like(w)).first;
    auto& v = found->second;
    // Section 5: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v.
    v.mul_(momentum).add_(w, -decay).add_(w.grad(), -lr_);
    w.add_(v);
  }
}

Trainer::Outcome Trainer::fit(const std::string& run_dir, const TrainHooks& hooks) {
  if (hooks.writer) fs::create_directories(run_dir);
  const int64_t crop = model_->options.input_size();
  const int64_t batch_size = options_.batch_size();
  const auto device = model_->tower_devices().front();
  data::ImageDataset train_set(train_, data::TransformOptions()
                                           .resize(options_.resize())
                                           .crop(crop)
                                           .pca_std(options_.pca_std())
                                           .seed(options_.seed())
                                           .on_error(options_.on_error()),
                               stats_);
  const Preprocessing pre{train_->classes(), stats_.mean_rgb, options_.resize(), crop, {}};
  const double flat = std::log(static_cast<double>(train_->classes().size()));
  const bool parallel = hooks.world > 1;
  if (parallel && !hooks.sum) throw std::invalid_argument("data parallel training needs TrainHooks::sum");
  int64_t flat_steps = 0, skipped_steps = 0;
  bool warned_flat = false;

  while (epoch_ < options_.epochs()) {
    data::EpochSampler sampler(train_->size(), options_.seed(), /*shuffle=*/true, hooks.rank, hooks.world);
    sampler.set_epoch(epoch_, static_cast<size_t>(step_ * batch_size));
    train_set.set_epoch(epoch_);
    const auto shard = static_cast<int64_t>(sampler.shard_size());
    const int64_t steps = (shard + batch_size - 1) / batch_size;
    auto loader = torch::data::make_data_loader(
        train_set, sampler,
        torch::data::DataLoaderOptions(static_cast<size_t>(batch_size))
            .workers(static_cast<size_t>(options_.workers()))
            .max_jobs(static_cast<size_t>(2 * options_.workers() + 1)));
    model_->train();
    auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    for (auto& batch : *loader) {
      if (parallel) {
        // Each rank its own dropout, reproducible after a resume without saving every
        // rank's generator.
        manual_seed(mix_seed(options_.seed(), hooks.rank, static_cast<uint64_t>(epoch_), static_cast<uint64_t>(step_)));
      }
      auto x = data::normalize(batch, stats_, device);
      if (options_.channels_last()) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const auto y = batch.labels.to(device);
      torch::Tensor logits;
      {
        const AutocastGuard autocast(device.type(), options_.precision());
        logits = model_->forward(x);
      }
      const auto loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat), y);
      model_->zero_grad();
      scaler_.scale(loss).backward();
      const double value = loss.item<double>();
      const bool finite = std::isfinite(value);
      auto diverged = [&](const std::string& where) {
        const char* what = std::isnan(value) ? "NaN" : std::isinf(value) ? "infinite" : "non-finite";
        return std::runtime_error("the loss became " + std::string(what) +
                                  " at epoch " + std::to_string(epoch_ + 1) + ", step " + std::to_string(step_ + 1) +
                                  where + " (learning rate " + number(lr_) + "): lower --lr");
      };
      // float16 overflows are the loss scaler's to handle (below); otherwise a
      // non-finite loss ends the run (on every rank together: see the flags).
      if (!finite && !scaler_.enabled() && !parallel) throw diverged("");
      std::vector<torch::Tensor> gradients;
      for (const auto& p : model_->parameters()) gradients.push_back(p.grad());
      if (hooks.reduce_gradients) hooks.reduce_gradients(gradients);
      bool stop = hooks.stop && hooks.stop->load();
      if (parallel) {
        // One all-reduce of flags before the update: every rank stops at the same step
        // (or the others would wait in an all-reduce), and a rank's non-finite loss
        // stops them all at once instead of leaving the others to time out.
        const auto flags = torch::tensor({stop ? 1.0 : 0.0, finite ? 0.0 : 1.0}, torch::kDouble);
        hooks.sum(flags);
        stop = flags[0].item<double>() > 0;
        const auto bad = static_cast<int64_t>(flags[1].item<double>());
        if (bad > 0 && !scaler_.enabled()) {
          throw diverged(" on " + std::to_string(bad) + " of " + std::to_string(hooks.world) + " ranks");
        }
      }
      // float16: gradients unscaled after the all-reduce, so every rank sees the same
      // infinities and all skip together (as GradScaler does); the scale halves.
      if (scaler_.unscale_and_update(gradients)) {
        step_update();
        skipped_steps = 0;
      } else if (++skipped_steps >= kMaxSkippedSteps) {
        throw std::runtime_error("float16: the last " + std::to_string(kMaxSkippedSteps) +
                                 " steps had non-finite gradients (loss scale now " + number(scaler_.scale()) +
                                 ") at epoch " + std::to_string(epoch_ + 1) + ", step " + std::to_string(step_ + 1) +
                                 ": the run has diverged; lower --lr or use --precision bf16");
      }
      const auto n = static_cast<double>(y.size(0));
      if (finite) {  // an overflowing float16 step counts in no figure
        loss_sum_ += value * n;
        correct_ += logits.argmax(1).eq(y).sum().item<double>();
        seen_ += n;
      }
      ++step_;
      flat_steps = std::abs(value - flat) < kFlatTolerance ? flat_steps + 1 : 0;
      if (flat_steps >= kFlatSteps && !warned_flat && hooks.on_warning) {
        warned_flat = true;
        hooks.on_warning("the loss has sat at ln(" + std::to_string(train_->classes().size()) + ") = " +
                         number(flat) + " for " + std::to_string(kFlatSteps) +
                         " steps: the network is not learning. The paper's bias-1 initialisation can do "
                         "this; try --init caffe or a lower --lr");
      }
      if (hooks.on_step) hooks.on_step(epoch_ + 1, step_, steps, value, seen_ / (seconds_ + elapsed()));
      if (stop) {
        seconds_ += elapsed();
        if (hooks.writer) save((fs::path(run_dir) / "last.pt").string());
        return Outcome::kStopped;
      }
    }
    seconds_ += elapsed();

    EpochMetrics m;
    m.epoch = epoch_ + 1;
    double loss_sum = loss_sum_, correct = correct_, seen = seen_;
    if (parallel) {  // the whole world's figures, not an average of averages
      const auto counts = torch::tensor({loss_sum, correct, seen}, torch::kDouble);
      hooks.sum(counts);
      loss_sum = counts[0].item<double>();
      correct = counts[1].item<double>();
      seen = counts[2].item<double>();
    }
    m.train_loss = seen > 0 ? loss_sum / seen : std::nan("");
    m.train_top1 = seen > 0 ? correct / seen : std::nan("");
    m.lr = lr_;
    m.images_per_second = seconds_ > 0 ? seen / seconds_ : 0;
    m.val_loss = m.val_top1 = m.val_top5 = std::numeric_limits<double>::quiet_NaN();
    bool improved = false;
    if (val_) {
      const auto e = parallel ? evaluate_shard(model_, val_, pre, hooks.rank, hooks.world, hooks.sum,
                                               options_.ten_crop(), batch_size, options_.workers(), options_.on_error())
                              : evaluate(model_, val_, pre, options_.ten_crop(), batch_size, options_.workers(),
                                         options_.on_error());
      m.val_loss = e.loss;
      m.val_top1 = e.top1;
      m.val_top5 = e.top5;
      improved = 1 - e.top1 < best_error_;
      if (improved) {
        best_error_ = 1 - e.top1;
        bad_epochs_ = 0;
      } else {
        ++bad_epochs_;
      }
    }
    m.seconds = seconds_;
    if (options_.lr_policy() == LrPolicy::kPlateau && bad_epochs_ >= options_.patience()) {
      lr_ *= 0.1;  // Section 5: "divide the learning rate by 10"
      bad_epochs_ = 0;
    } else if (options_.lr_policy() == LrPolicy::kStep && (epoch_ + 1) % options_.step_epochs() == 0) {
      lr_ *= options_.lr_factor();
    }
    ++epoch_;
    step_ = 0;
    loss_sum_ = correct_ = seen_ = seconds_ = 0;
    history_.push_back(m);
    if (hooks.writer) {
      const auto last = (fs::path(run_dir) / "last.pt").string();
      save(last);
      if (improved) save((fs::path(run_dir) / "best.pt").string());
      std::string lines;
      for (const auto& h : history_) lines += h.to_json() + "\n";
      detail::write_file_atomically((fs::path(run_dir) / "metrics.jsonl").string(), lines);
    }
    if (hooks.on_epoch) hooks.on_epoch(m);
  }
  return Outcome::kFinished;
}

void Trainer::save(const std::string& path) const {
  CheckpointExtras extras;
  Preprocessing{train_->classes(), stats_.mean_rgb, options_.resize(), model_->options.input_size(), {}}.add_to(extras);
  for (const auto& [name, v] : momentum_) extras.tensors["momentum/" + name] = v;
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    extras.tensors["rng/cpu"] = generator.get_state();
  }
  // The GPUs' too, so that dropout draws the same masks after a resume on the same
  // devices (cuDNN's algorithms are another matter: GPU runs are not bitwise repeatable
  // unless deterministic algorithms are asked for).
  for (auto& [key, generator] : cuda_generators(*model_)) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    extras.tensors[key] = generator.get_state();
  }
  extras.tensors["train/state"] = torch::tensor(
      {double(epoch_), double(step_), best_error_, double(bad_epochs_), loss_sum_, correct_, seen_, seconds_, lr_},
      torch::kDouble);
  std::string lines;
  for (const auto& h : history_) lines += h.to_json() + "\n";
  extras.strings["train/history"] = lines;
  extras.strings["train/seed"] = std::to_string(options_.seed());
  extras.tensors["train/scaler"] = torch::tensor(scaler_.state(), torch::kDouble);
  alexnet::save(*model_, path, extras);
}

void Trainer::restore(const std::string& checkpoint) {
  // One read: the weights go in only after the training state has been found.
  AlexNet staged(model_->options);
  CheckpointExtras extras;
  load_weights(*staged, checkpoint, &extras);
  const auto state = extras.tensors.find("train/state");
  if (state == extras.tensors.end() || state->second.numel() != 9) {
    throw std::runtime_error("checkpoint '" + checkpoint + "': has no training state to resume from");
  }
  {
    torch::NoGradGuard no_grad;
    const auto from = staged->parameters();
    auto to = model_->parameters();
    for (size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
  }
  const auto scaler = extras.tensors.find("train/scaler");
  if (scaler != extras.tensors.end()) {
    const auto t = scaler->second.to(torch::kDouble).contiguous();
    scaler_.load_state(std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel()));
  }
  momentum_.clear();
  for (const auto& p : model_->named_parameters()) {
    const auto found = extras.tensors.find("momentum/" + p.key());
    if (found != extras.tensors.end()) momentum_[p.key()] = found->second.to(p.value().device());
  }
  const auto s = state->second.accessor<double, 1>();
  epoch_ = static_cast<int64_t>(s[0]);
  step_ = static_cast<int64_t>(s[1]);
  best_error_ = s[2];
  bad_epochs_ = static_cast<int64_t>(s[3]);
  loss_sum_ = s[4];
  correct_ = s[5];
  seen_ = s[6];
  seconds_ = s[7];
  lr_ = s[8];
  const auto rng = extras.tensors.find("rng/cpu");
  if (rng != extras.tensors.end()) {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng->second);
  }
  for (auto& [key, generator] : cuda_generators(*model_)) {
    const auto found = extras.tensors.find(key);
    if (found == extras.tensors.end()) continue;
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(found->second);
  }
  history_.clear();
  for (const auto& line : split_lines(extras.strings["train/history"])) {
    history_.push_back(EpochMetrics::from_json(line));
  }
}

std::string Evaluation::to_json(const std::vector<std::string>& classes) const {
  std::ostringstream out;
  out << "{\"images\":" << images << ",\"top1\":" << number(top1) << ",\"top5\":" << number(top5)
      << ",\"loss\":" << number(loss) << ",\"skipped\":" << skipped << ",\"per_class\":[";
  for (size_t c = 0; c < per_class.size(); ++c) {
    const std::string name = c < classes.size() ? classes[c] : std::to_string(c);
    out << (c ? "," : "") << "{\"index\":" << c << ",\"label\":\"" << json_escape(name) << "\",\"images\":" << per_class_images[c]
        << ",\"top1\":" << number(per_class[c]) << "}";
  }
  out << "]}";
  return out.str();
}

int64_t for_each_output(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                     Layer layer, bool ten_crop, int64_t batch_size, int64_t workers, data::OnError on_error,
                     const std::function<void(const data::Batch&, const torch::Tensor&)>& visit) {
  data::ImageDataset dataset(source, data::TransformOptions()
                                         .resize(pre.resize)
                                         .crop(pre.crop)
                                         .mode(ten_crop ? data::Mode::kTenCrop : data::Mode::kCenter)
                                         .pca_std(0)
                                         .on_error(on_error));
  data::EpochSampler sampler(source->size(), 0, /*shuffle=*/false);
  auto loader = torch::data::make_data_loader(
      dataset, sampler,
      torch::data::DataLoaderOptions(static_cast<size_t>(batch_size)).workers(static_cast<size_t>(workers)));
  const auto device = model->tower_devices().front();
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  int64_t skipped = 0;
  for (auto& batch : *loader) {
    skipped += batch.skipped;
    if (batch.labels.size(0) > 0) visit(batch, model->forward_to(pre.apply(batch, device), layer));
  }
  model->train(was_training);
  return skipped;
}

Evaluation evaluate(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                    bool ten_crop, int64_t batch_size, int64_t workers, data::OnError on_error) {
  const auto classes = model->options.num_classes();
  Evaluation e;
  std::vector<double> correct(static_cast<size_t>(classes), 0.0);
  e.per_class_images.assign(static_cast<size_t>(classes), 0);
  double loss = 0, top1 = 0, top5 = 0;
  e.skipped = for_each_output(model, source, pre, Layer::kLogits, ten_crop, batch_size, workers, on_error,
                              [&](const data::Batch& batch, const torch::Tensor& logits) {
    const auto n = batch.labels.size(0);
    auto probabilities = logits.softmax(1);
    if (ten_crop) probabilities = probabilities.view({n, 10, classes}).mean(1);  // Section 4.1
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

Evaluation evaluate_shard(AlexNet& model, const std::shared_ptr<data::Source>& source, const Preprocessing& pre,
                          size_t rank, size_t world, const std::function<void(const torch::Tensor&)>& sum,
                          bool ten_crop, int64_t batch_size, int64_t workers, data::OnError on_error) {
  if (world <= 1) return evaluate(model, source, pre, ten_crop, batch_size, workers, on_error);
  const auto part = std::make_shared<ShardSource>(source, rank, world);
  Evaluation e;
  if (part->size() > 0) {
    try {
      e = evaluate(model, part, pre, ten_crop, batch_size, workers, on_error);
    } catch (const std::runtime_error&) {
      if (on_error != data::OnError::kSkip) throw;  // every image of this part unreadable: counted below
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
  sum(total);
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

torch::Tensor classify(AlexNet& model, const std::vector<std::string>& images, const Preprocessing& pre,
                       bool ten_crop) {
  auto source = data::open_image_files(images);
  data::ImageDataset dataset(source, data::TransformOptions()
                                         .resize(pre.resize)
                                         .crop(pre.crop)
                                         .mode(ten_crop ? data::Mode::kTenCrop : data::Mode::kCenter)
                                         .pca_std(0));
  std::vector<size_t> all(images.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  const auto batch = dataset.get_batch(all);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto device = model->tower_devices().front();
  auto probabilities = model->forward(pre.apply(batch, device)).softmax(1);
  if (ten_crop) probabilities = probabilities.view({static_cast<int64_t>(images.size()), 10, -1}).mean(1);
  return probabilities.to(torch::kCPU);
}

}  // namespace alexnet
