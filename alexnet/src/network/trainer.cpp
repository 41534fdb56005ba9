// The trainer's step and state: LibTorch only, in the network target, so that a
// benchmark or a loop of one's own (and a machine without OpenCV, such as a pip LibTorch with CUDA) can
// step without the data pipeline.

#include <alexnet/network/distributed.h>
#include <alexnet/network/error.h>
#include <alexnet/network/runtime.h>
#include <alexnet/network/trainer.h>

#include "network/json.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/record_function.h>
#include <torch/nn/functional/loss.h>

#include <cmath>
#include <algorithm>
#include <map>
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

struct Trainer::Impl {
  AlexNet model;
  TrainerOptions options;
  ProcessGroup* group = nullptr;
  std::map<std::string, torch::Tensor> momentum;
  LossScaler scaler;
  double lr;
  int64_t epoch = 0;  // completed epochs
  int64_t step = 0;   // steps done in the epoch in progress
  // Within a process's life only.
  int64_t flat_steps = 0, skipped_steps = 0;
  bool warned_flat = false;

  // Per parameter, in named_parameters' order: the learning-rate multiplier (0 for a
  // frozen one, which has no gradient and is never visited).
  std::vector<double> multipliers;

  Impl(AlexNet m, TrainerOptions o) : model(std::move(m)), options(std::move(o)), lr(options.lr()) {}

  bool parallel() const { return group && group->size() > 1; }
  c10::Device device() const { return model->tower_devices().front(); }
  bool channels_last() const { return runs_channels_last(device(), options.channels_last()); }
  void update();
};

const std::vector<std::string>& layer_names() {
  static const std::vector<std::string> names{"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"};
  return names;
}

void validate(const TrainerOptions& o) {
  auto positive = [](const char* name, double v) {
    if (!(v > 0) || !std::isfinite(v)) throw OptionError(name, "must be positive, got " + number(v));
  };
  positive("lr", o.lr());
  if (!(o.momentum() >= 0 && o.momentum() < 1)) throw OptionError("momentum", "must be in [0, 1), got " + number(o.momentum()));
  if (!(o.weight_decay() >= 0) || !std::isfinite(o.weight_decay())) {
    throw OptionError("weight_decay", "must be at least 0, got " + number(o.weight_decay()));
  }
  const auto& layers = layer_names();
  auto known = [&](const std::string& layer) { return std::find(layers.begin(), layers.end(), layer) != layers.end(); };
  for (const auto& layer : o.freeze()) {
    if (!known(layer)) throw OptionError("freeze", "has '" + layer + "', not a layer (conv1 .. conv5, fc6 .. fc8)");
  }
  for (const auto& [name, k] : o.lr_mult()) {
    const auto dot = name.find('.');
    const auto layer = name.substr(0, dot);
    const auto part = dot == std::string::npos ? std::string() : name.substr(dot + 1);
    if (!known(layer) || (dot != std::string::npos && part != "weight" && part != "bias")) {
      throw OptionError("lr_mult", "has '" + name + "', not a layer (conv1 .. fc8) or one's weight or bias (fc8.bias)");
    }
    if (!(k >= 0) || !std::isfinite(k)) throw OptionError("lr_mult", "of " + name + " must be at least 0, got " + number(k));
    if (std::find(o.freeze().begin(), o.freeze().end(), layer) != o.freeze().end()) {
      throw OptionError("lr_mult", "of " + name + ": " + layer + " is frozen, so it does not train");
    }
  }
}

Trainer::Trainer(AlexNet model, TrainerOptions options) : impl_(std::make_unique<Impl>(std::move(model), options)) {
  validate(options);
  auto& m = *impl_;
  m.options.precision(resolve(options.precision(), m.model->tower_devices()));  // fp16 refused off CUDA
  options = m.options;
  m.scaler = LossScaler(options.precision() == Precision::kFp16);
  set_tf32(options.tf32());
  // Each parameter's layer, by identity: the towers' and torchvision's names differ.
  std::map<const void*, std::pair<std::string, std::string>> layer_of;
  for (const auto& l : m.model->learned_layers()) {
    layer_of[l.weight.unsafeGetTensorImpl()] = {l.name, "weight"};
    layer_of[l.bias.unsafeGetTensorImpl()] = {l.name, "bias"};
  }
  const auto& frozen = options.freeze();
  for (auto& p : m.model->parameters()) {
    const auto found = layer_of.find(p.unsafeGetTensorImpl());
    double k = 1;
    if (found != layer_of.end()) {
      const auto& [layer, part] = found->second;
      const auto& mult = options.lr_mult();
      if (const auto whole = mult.find(layer); whole != mult.end()) k = whole->second;
      if (const auto one = mult.find(layer + "." + part); one != mult.end()) k = one->second;
      if (std::find(frozen.begin(), frozen.end(), layer) != frozen.end()) {
        k = 0;
        p.set_requires_grad(false);  // no gradient: no update, no decay, no all-reduce
      }
    }
    m.multipliers.push_back(k);
  }
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
  // Each bucket's all-reduce starts during the backward pass as its gradients arrive;
  // frozen parameters have none, and no rank waits for them.
  std::vector<torch::Tensor> trained;
  for (const auto& p : impl_->model->parameters()) {
    if (p.requires_grad()) trained.push_back(p);
  }
  group.overlap(trained);
}

void Trainer::Impl::update() {
  RECORD_USER_SCOPE("alexnet::sgd_update");  // named in LibTorch's profiler
  torch::NoGradGuard no_grad;
  size_t i = 0;
  for (auto& item : model->named_parameters()) {
    auto& w = item.value();
    const double rate = lr * multipliers[i++];  // Caffe's lr_mult, 1 unless asked
    if (!w.grad().defined()) continue;
    auto found = momentum.find(item.key());
    if (found == momentum.end()) found = momentum.emplace(item.key(), torch::zeros_like(w)).first;
    auto& v = found->second;
    // Section 5: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v.
    v.mul_(options.momentum()).add_(w, -options.weight_decay() * rate).add_(w.grad(), -rate);
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
    return OptionHint("the loss became " + std::string(what) + " at epoch " + std::to_string(m.epoch + 1) + ", step " +
                          std::to_string(m.step + 1) + where + " (learning rate " + number(m.lr) +
                          "): lower the learning rate",
                      "lr");
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
  for (const auto& p : m.model->parameters()) {
    if (p.grad().defined()) gradients.push_back(p.grad());
  }
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

CheckpointExtras Trainer::state() const {
  const auto& m = *impl_;
  CheckpointExtras out;
  detail::Json j;
  j["epoch"] = m.epoch;
  j["step"] = m.step;
  j["lr"] = m.lr;
  const auto scaler = m.scaler.state();
  j["loss_scale"] = scaler[0];
  j["good_steps"] = static_cast<int64_t>(scaler[1]);
  out.strings["trainer"] = detail::dump(j);
  for (const auto& [name, v] : m.momentum) out.tensors["momentum/" + name] = v;
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    out.tensors["rng/cpu"] = generator.get_state();
  }
  // The GPUs' too, so that dropout draws the same masks after a resume on the same
  // devices (cuDNN's algorithms are another matter: GPU runs are not bitwise
  // repeatable unless deterministic algorithms are asked for).
  for (auto& [key, generator] : cuda_generators(*m.model)) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    out.tensors[key] = generator.get_state();
  }
  return out;
}

void Trainer::restore(const CheckpointExtras& state, const std::string& source) {
  auto& m = *impl_;
  const auto found = state.strings.find("trainer");
  if (found == state.strings.end()) {
    throw std::runtime_error("checkpoint '" + source + "': has no training state to resume from");
  }
  int64_t epoch = 0, step = 0;
  double lr = 0;
  std::vector<double> scaler;
  try {
    const detail::Record r(found->second, "training state");
    epoch = r.whole("epoch");
    step = r.whole("step");
    lr = r.real("lr");
    scaler = {r.real("loss_scale"), static_cast<double>(r.whole("good_steps"))};
    if (epoch < 0 || step < 0 || !(lr > 0) || !std::isfinite(lr)) {
      throw std::invalid_argument("training state: epoch " + std::to_string(epoch) + ", step " + std::to_string(step) +
                                  ", lr " + number(lr));
    }
    m.scaler.load_state(scaler);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("checkpoint '" + source + "': malformed " + e.what());
  }
  m.epoch = epoch;
  m.step = step;
  m.lr = lr;
  m.momentum.clear();
  for (const auto& p : m.model->named_parameters()) {
    const auto v = state.tensors.find("momentum/" + p.key());
    if (v == state.tensors.end()) continue;
    if (v->second.sizes() != p.value().sizes()) {
      throw std::runtime_error("checkpoint '" + source + "': momentum of '" + p.key() + "' has shape " +
                               c10::str(v->second.sizes()) + ", the parameter " + c10::str(p.value().sizes()));
    }
    // A copy: the trainer's buffers are updated in place, never the caller's.
    m.momentum[p.key()] = v->second.to(p.value().device(), p.value().scalar_type(), /*non_blocking=*/false, /*copy=*/true)
                              .contiguous(p.value().suggest_memory_format());
  }
  const auto rng = state.tensors.find("rng/cpu");
  if (rng != state.tensors.end()) {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng->second);
  }
  for (auto& [key, generator] : cuda_generators(*m.model)) {
    const auto g = state.tensors.find(key);
    if (g == state.tensors.end()) continue;
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(g->second);
  }
}

void Trainer::check_replicas() const {
  const auto& m = *impl_;
  if (!m.parallel()) return;
  // Every replica's parameters as summed bit patterns per tensor: equal on all ranks
  // exactly when the replicas hold the same weights.
  std::vector<int64_t> local;
  for (const auto& p : m.model->parameters()) {
    local.push_back(p.detach().to(torch::kCPU).contiguous().view(torch::kInt).to(torch::kLong).sum().item<int64_t>());
  }
  const auto all = torch::tensor(local, torch::kLong);
  m.group->sum(all);
  if (!torch::equal(all, torch::tensor(local, torch::kLong) * m.group->size())) {
    throw std::runtime_error("data parallel: the replicas' weights differ after epoch " + std::to_string(m.epoch));
  }
}

void Trainer::next_epoch() {
  ++impl_->epoch;
  impl_->step = 0;
}
int64_t Trainer::epoch() const { return impl_->epoch; }
int64_t Trainer::steps_in_epoch() const { return impl_->step; }
double Trainer::lr() const { return impl_->lr; }
void Trainer::set_lr(double lr) {
  if (!(lr > 0) || !std::isfinite(lr)) throw OptionError("lr", "must be positive, got " + number(lr));
  impl_->lr = lr;
}
ProcessGroup* Trainer::group() const { return impl_->group; }
bool Trainer::channels_last() const { return impl_->channels_last(); }
AlexNet& Trainer::model() { return impl_->model; }
const TrainerOptions& Trainer::options() const { return impl_->options; }

}  // namespace alexnet
