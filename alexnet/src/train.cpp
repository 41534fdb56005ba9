// The trainer's step and checkpoints: LibTorch only, in the network target, so that
// a benchmark or a loop of one's own (and the GPU machine, which has no OpenCV) can
// step without the data pipeline. Training on data (the constructor taking it, and
// Trainer::fit) is fit.cpp, in alexnet::train.

#include <alexnet/error.h>
#include <alexnet/runtime.h>
#include <alexnet/train.h>

#include "json.h"
#include "text.h"
#include "trainer_impl.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/record_function.h>
#include <torch/nn/functional/loss.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace alexnet {
namespace {

// A loss within this of ln(classes) for this many steps in a row is "flat".
constexpr double kFlatTolerance = 0.02;
constexpr int64_t kFlatSteps = 100;
// float16: this many steps in a row skipped by the loss scaler (its scale halved each
// time, to 2^-34 from 2^16) means the run has diverged, not that the scale is high.
constexpr int64_t kMaxSkippedSteps = 50;

std::string number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

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

}  // namespace

template <>
const std::vector<std::pair<std::string, LrPolicy>>& names<LrPolicy>() {
  static const std::vector<std::pair<std::string, LrPolicy>> table{
      {"plateau", LrPolicy::kPlateau}, {"step", LrPolicy::kStep}, {"fixed", LrPolicy::kFixed}};
  return table;
}

std::string to_string(LrPolicy p) { return name_of(p); }

LrPolicy lr_policy_from_string(const std::string& name) { return parse<LrPolicy>("learning-rate policy", name); }

void validate(const TrainOptions& o) {
  auto positive = [](const char* name, double v) {
    if (!(v > 0) || !std::isfinite(v)) throw OptionError(name, "must be positive, got " + number(v));
  };
  auto at_least = [](const char* name, double v, double low) {
    if (!(v >= low) || !std::isfinite(v)) throw OptionError(name, "must be at least " + number(low) + ", got " + number(v));
  };
  positive("epochs", static_cast<double>(o.epochs()));
  positive("batch_size", static_cast<double>(o.batch_size()));
  positive("lr", o.lr());
  if (!(o.momentum() >= 0 && o.momentum() < 1)) throw OptionError("momentum", "must be in [0, 1), got " + number(o.momentum()));
  at_least("weight_decay", o.weight_decay(), 0);
  positive("patience", static_cast<double>(o.patience()));
  positive("step_epochs", static_cast<double>(o.step_epochs()));
  positive("lr_factor", o.lr_factor());
  at_least("workers", static_cast<double>(o.workers()), 0);
  positive("resize", static_cast<double>(o.resize()));
  at_least("pca_std", o.pca_std(), 0);
}

std::string EpochMetrics::to_json() const {
  detail::Json out;
  out["epoch"] = epoch;
  out["train_loss"] = detail::number(train_loss);
  out["train_top1"] = detail::number(train_top1);
  out["val_loss"] = detail::number(val_loss);
  out["val_top1"] = detail::number(val_top1);
  out["val_top5"] = detail::number(val_top5);
  out["lr"] = detail::number(lr);
  out["images_per_second"] = detail::number(images_per_second);
  out["seconds"] = detail::number(seconds);
  return detail::dump(out);
}

std::string EpochMetrics::to_text() const {
  char line[320];
  std::snprintf(line, sizeof line,
                "epoch %lld: train loss %.4f top-1 %.2f%% | val loss %.4f top-1 %.2f%% top-5 %.2f%% | lr %g | %.0f "
                "images/s, %.0f s",
                static_cast<long long>(epoch), train_loss, 100 * train_top1, val_loss, 100 * val_top1, 100 * val_top5,
                lr, images_per_second, seconds);
  return line;
}

EpochMetrics EpochMetrics::from_json(const std::string& line) {
  EpochMetrics m;
  try {
    const auto j = detail::Json::parse(line);
    m.epoch = j.at("epoch").get<int64_t>();
    m.train_loss = detail::number_at(j, "train_loss");
    m.train_top1 = detail::number_at(j, "train_top1");
    m.val_loss = detail::number_at(j, "val_loss");
    m.val_top1 = detail::number_at(j, "val_top1");
    m.val_top5 = detail::number_at(j, "val_top5");
    m.lr = detail::number_at(j, "lr");
    m.images_per_second = detail::number_at(j, "images_per_second");
    m.seconds = detail::number_at(j, "seconds");
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("not an epoch's figures: " + std::string(e.what()));
  }
  return m;
}

std::vector<EpochMetrics> read_metrics(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("metrics '" + path + "': cannot open");
  std::vector<EpochMetrics> out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    try {
      out.push_back(EpochMetrics::from_json(line));
    } catch (const std::exception&) {
      throw std::runtime_error("metrics '" + path + "' line " + std::to_string(number) + ": not an epoch's figures");
    }
  }
  return out;
}


Trainer::Trainer(AlexNet model, TrainOptions options) : impl_(std::make_unique<Impl>(std::move(model), options)) {
  validate(options);
  auto& m = *impl_;
  if (options.precision() == Precision::kFp16 && !m.device().is_cuda()) {
    throw OptionError("precision", "fp16 needs a CUDA device; on CPUs use bf16");
  }
  m.scaler = LossScaler(options.precision() == Precision::kFp16);
  set_tf32(options.tf32());
  if (m.channels_last()) {
    torch::NoGradGuard no_grad;
    for (auto& p : m.model->parameters()) {
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
}

Trainer::~Trainer() = default;
Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;

void Trainer::distribute(ProcessGroup& group) {
  if (impl_->group) throw std::logic_error("Trainer::distribute: called twice");
  impl_->group = &group;
  group.broadcast(impl_->model->parameters());  // every replica starts from rank 0's weights
  // Each bucket's all-reduce starts during the backward pass as its gradients arrive.
  group.overlap(impl_->model->parameters());
}

void Trainer::Impl::update() {
  RECORD_USER_SCOPE("alexnet::sgd_update");  // named in LibTorch's profiler
  torch::NoGradGuard no_grad;
  const double decay = options.weight_decay() * lr;
  for (auto& item : model->named_parameters()) {
    auto& w = item.value();
    if (!w.grad().defined()) continue;
    auto found = momentum.find(item.key());
    if (found == momentum.end()) found = momentum.emplace(item.key(), torch::zeros_like(w)).first;
    auto& v = found->second;
    // Section 5: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v.
    v.mul_(options.momentum()).add_(w, -decay).add_(w.grad(), -lr);
    w.add_(v);
  }
}

Trainer::StepResult Trainer::step(const torch::Tensor& images, const torch::Tensor& labels, bool stop_requested) {
  auto& m = *impl_;
  const auto device = m.device();
  m.model->train();
  auto x = images.to(device);
  if (m.channels_last()) {
    // conv1 casts the images to bf16 under autocast anyway: cast first, and the
    // layout copy moves half the bytes.
    if (m.options.precision() == Precision::kBf16) x = x.to(at::kBFloat16);
    x = x.contiguous(at::MemoryFormat::ChannelsLast);
  }
  const auto y = labels.to(device);
  torch::Tensor logits;
  {
    const AutocastGuard autocast(device.type(), m.options.precision());
    logits = m.model->forward(x);
  }
  const auto loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat), y);
  // Gradients unset rather than zeroed: the backward pass's first gradient then
  // becomes .grad as it is, with no fill and no addition per parameter.
  m.model->zero_grad(/*set_to_none=*/true);
  m.scaler.scale(loss).backward();
  StepResult result;
  result.loss = loss.item<double>();
  const bool finite = std::isfinite(result.loss);
  auto diverged = [&](const std::string& where) {
    const char* what = std::isnan(result.loss) ? "NaN" : std::isinf(result.loss) ? "infinite" : "non-finite";
    return std::runtime_error("the loss became " + std::string(what) + " at epoch " + std::to_string(m.epoch + 1) +
                              ", step " + std::to_string(m.step + 1) + where + " (learning rate " + number(m.lr) +
                              "): lower the learning rate (lr)");
  };
  // float16 overflows are the loss scaler's to handle (below); otherwise a
  // non-finite loss ends the run (on every replica together: see the flags).
  if (!finite && !m.scaler.enabled() && !m.parallel()) throw diverged("");
  if (m.group) m.group->finish_overlap();  // the replicas' mean gradients, in .grad
  result.stop = stop_requested;
  if (m.parallel()) {
    // One all-reduce of flags before the update: every replica stops at the same step
    // (or the others would wait in an all-reduce), and a replica's non-finite loss
    // stops them all at once instead of leaving the others to time out.
    const auto flags = torch::tensor({stop_requested ? 1.0 : 0.0, finite ? 0.0 : 1.0}, torch::kDouble);
    m.group->sum(flags);
    result.stop = flags[0].item<double>() > 0;
    const auto bad = static_cast<int64_t>(flags[1].item<double>());
    if (bad > 0 && !m.scaler.enabled()) {
      throw diverged(" on " + std::to_string(bad) + " of " + std::to_string(m.group->size()) + " replicas");
    }
  }
  std::vector<torch::Tensor> gradients;
  for (const auto& p : m.model->parameters()) gradients.push_back(p.grad());
  // float16: gradients unscaled after the all-reduce, so every replica sees the same
  // infinities and all skip together (as GradScaler does); the scale halves.
  result.updated = m.scaler.unscale_and_update(gradients);
  if (result.updated) {
    m.update();
    m.skipped_steps = 0;
  } else if (++m.skipped_steps >= kMaxSkippedSteps) {
    throw std::runtime_error("float16: the last " + std::to_string(kMaxSkippedSteps) +
                             " steps had non-finite gradients (loss scale now " + number(m.scaler.scale()) +
                             ") at epoch " + std::to_string(m.epoch + 1) + ", step " + std::to_string(m.step + 1) +
                             ": the run has diverged; lower the learning rate (lr) or use precision bf16");
  }
  ++m.step;
  result.correct = logits.argmax(1).eq(y).sum().item<int64_t>();
  const auto classes = m.model->options.num_classes();
  const double flat = std::log(static_cast<double>(classes));
  m.flat_steps = finite && std::abs(result.loss - flat) < kFlatTolerance ? m.flat_steps + 1 : 0;
  if (m.flat_steps >= kFlatSteps && !m.warned_flat) {
    m.warned_flat = true;
    result.warning = "the loss has sat at ln(" + std::to_string(classes) + ") = " + number(flat) + " for " +
                     std::to_string(kFlatSteps) +
                     " steps: the network is not learning. The paper's bias-1 initialisation can do this; try the "
                     "caffe initialisation (init) or a lower learning rate (lr)";
  }
  return result;
}

void Trainer::Impl::write(const std::string& path, bool inference_only) const {
  CheckpointExtras out;
  pre.add_to(out);
  if (!inference_only) {
    for (const auto& [key, value] : extras.tensors) out.tensors[key] = value;
    for (const auto& [key, value] : extras.strings) out.strings[key] = value;
    for (const auto& [name, v] : momentum) out.tensors["momentum/" + name] = v;
    {
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      out.tensors["rng/cpu"] = generator.get_state();
    }
    // The GPUs' too, so that dropout draws the same masks after a resume on the same
    // devices (cuDNN's algorithms are another matter: GPU runs are not bitwise
    // repeatable unless deterministic algorithms are asked for).
    for (auto& [key, generator] : cuda_generators(*model)) {
      std::lock_guard<std::mutex> lock(generator.mutex());
      out.tensors[key] = generator.get_state();
    }
    detail::Json progress;
    progress["epoch"] = epoch;
    progress["step"] = step;
    progress["best_error"] = best_error;
    progress["bad_epochs"] = bad_epochs;
    progress["loss_sum"] = loss_sum;
    progress["correct"] = correct;
    progress["seen"] = seen;
    progress["seconds"] = seconds;
    progress["lr"] = lr;
    out.strings["train/progress"] = detail::dump(progress);
    std::string lines;
    for (const auto& h : history) lines += h.to_json() + "\n";
    out.strings["train/history"] = lines;
    out.strings["train/seed"] = std::to_string(options.seed());
    out.tensors["train/scaler"] = torch::tensor(scaler.state(), torch::kDouble);
  }
  alexnet::save(*model, path, out);
}

void Trainer::save(const std::string& path) const { impl_->write(path, /*inference_only=*/false); }

void Trainer::save_for_inference(const std::string& path) const { impl_->write(path, /*inference_only=*/true); }

void Trainer::restore(const std::string& checkpoint, CheckpointExtras* out) {
  auto& m = *impl_;
  // One read: the weights go in only after the training state has been found.
  AlexNet staged(m.model->options);
  CheckpointExtras extras;
  load_weights(*staged, checkpoint, &extras);
  // Named entries; checkpoints before them held the same nine numbers in a row.
  double s[9];
  const auto progress = extras.strings.find("train/progress");
  const auto state = extras.tensors.find("train/state");
  if (progress != extras.strings.end()) {
    try {
      const auto j = detail::Json::parse(progress->second);
      const char* keys[9] = {"epoch", "step", "best_error", "bad_epochs", "loss_sum", "correct", "seen", "seconds", "lr"};
      for (int i = 0; i < 9; ++i) s[i] = j.at(keys[i]).get<double>();
    } catch (const nlohmann::json::exception&) {
      throw std::runtime_error("checkpoint '" + checkpoint + "': malformed training state");
    }
  } else if (state != extras.tensors.end() && state->second.numel() == 9) {
    const auto t = state->second.to(torch::kDouble).contiguous();
    std::copy(t.data_ptr<double>(), t.data_ptr<double>() + 9, s);
  } else {
    throw std::runtime_error("checkpoint '" + checkpoint + "': has no training state to resume from");
  }
  {
    torch::NoGradGuard no_grad;
    const auto from = staged->parameters();
    auto to = m.model->parameters();
    for (size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
  }
  const auto scaler = extras.tensors.find("train/scaler");
  if (scaler != extras.tensors.end()) {
    const auto t = scaler->second.to(torch::kDouble).contiguous();
    m.scaler.load_state(std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel()));
  }
  m.momentum.clear();
  for (const auto& p : m.model->named_parameters()) {
    const auto found = extras.tensors.find("momentum/" + p.key());
    if (found != extras.tensors.end()) m.momentum[p.key()] = found->second.to(p.value().device());
  }
  m.epoch = static_cast<int64_t>(s[0]);
  m.step = static_cast<int64_t>(s[1]);
  m.best_error = s[2];
  m.bad_epochs = static_cast<int64_t>(s[3]);
  m.loss_sum = s[4];
  m.correct = s[5];
  m.seen = s[6];
  m.seconds = s[7];
  m.lr = s[8];
  const auto rng = extras.tensors.find("rng/cpu");
  if (rng != extras.tensors.end()) {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng->second);
  }
  for (auto& [key, generator] : cuda_generators(*m.model)) {
    const auto found = extras.tensors.find(key);
    if (found == extras.tensors.end()) continue;
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(found->second);
  }
  m.history.clear();
  for (const auto& line : detail::text_lines(extras.strings["train/history"])) {
    m.history.push_back(EpochMetrics::from_json(line));
  }
  if (out) *out = std::move(extras);
}

CheckpointExtras& Trainer::checkpoint_extras() { return impl_->extras; }
int64_t Trainer::epochs_done() const { return impl_->epoch; }
double Trainer::lr() const { return impl_->lr; }
void Trainer::set_lr(double lr) {
  if (!(lr > 0) || !std::isfinite(lr)) throw OptionError("lr", "must be positive, got " + number(lr));
  impl_->lr = lr;
}
const std::vector<EpochMetrics>& Trainer::history() const { return impl_->history; }
AlexNet& Trainer::model() { return impl_->model; }
const TrainOptions& Trainer::options() const { return impl_->options; }
const Preprocessing& Trainer::preprocessing() const { return impl_->pre; }

}  // namespace alexnet
