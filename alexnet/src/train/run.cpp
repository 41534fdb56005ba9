// The run: its configuration, its folder, and the epoch loop over its data (Section 5)
// around Trainer::step.

#include <alexnet/data/dataset.h>
#include <alexnet/data/source.h>
#include <alexnet/data/statistics.h>
#include <alexnet/network/checkpoint.h>
#include <alexnet/network/distributed.h>
#include <alexnet/network/error.h>
#include <alexnet/network/numbers.h>
#include <alexnet/network/pytorch.h>
#include <alexnet/network/runtime.h>
#include <alexnet/train/inference.h>
#include <alexnet/train/run.h>

#include "network/atomic_file.h"
#include "network/json.h"
#include "network/text.h"
#include "train/evaluate.h"

#include <torch/data/dataloader.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace alexnet {
namespace fs = std::filesystem;
using Kind = RunConfig::Setting::Kind;

namespace {

// One setting of a RunConfig: its name, its kind (for JSON), how to read and write it
// as text, and whether changing it at a resume leaves the run as an uninterrupted one
// would have been.
struct Entry {
  const char* name;
  Kind kind;
  std::function<std::string(const RunConfig&)> get;
  std::function<void(RunConfig&, const std::string&)> set;
  bool safe_to_change;
  const char* help;
  std::vector<std::string> choices;
};

std::string text_of(double v) { return detail::Json(v).dump(); }

template <typename T>
T whole(const std::string& name, const std::string& text) {
  return parse_number<T>(name, text);
}

double real(const std::string& name, const std::string& text) { return parse_number<double>(name, text); }

bool flag(const std::string& name, const std::string& text) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  throw OptionError(name, "takes true or false, got '" + text + "'");
}

template <typename E>
E choice(const std::string& name, const std::string& text) {
  try {
    return parse<E>(name, text);
  } catch (const std::invalid_argument&) {
    std::string choices;
    for (const auto& c : name_list<E>()) choices += (choices.empty() ? "" : ", ") + c;
    throw OptionError(name, "takes one of " + choices + ", got '" + text + "'");
  }
}

std::string devices_text(const std::vector<c10::Device>& devices) {
  std::string out;
  for (const auto& d : devices) out += (out.empty() ? "" : ",") + d.str();
  return out;
}

std::vector<c10::Device> parse_devices(const std::string& text) {
  std::vector<c10::Device> devices;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    try {
      devices.emplace_back(item);
    } catch (const std::exception&) {
      throw OptionError("devices", "has '" + item + "', not a device (cpu, cuda:0, ...)");
    }
  }
  if (devices.empty() || devices.size() > 2) {
    throw OptionError("devices", "takes one device or two separated by a comma, got '" + text + "'");
  }
  return devices;
}

// A setting of the epoch loop (c.train()) or of the step (c.trainer()), as `o`.
// Frozen layers as text: "conv1,conv2,...", in layer order.
std::string frozen_text(const std::vector<std::string>& frozen) {
  std::string out;
  for (const auto& layer : layer_names()) {
    if (std::find(frozen.begin(), frozen.end(), layer) != frozen.end()) out += (out.empty() ? "" : ",") + layer;
  }
  return out;
}

// "conv1..conv5", "..conv5" (from conv1), "fc7.." (to fc8), "conv1,fc6", or one name.
std::vector<std::string> parse_frozen(const std::string& text) {
  const auto& layers = layer_names();
  auto index = [&](const std::string& name, size_t otherwise) {
    if (name.empty()) return otherwise;
    const auto found = std::find(layers.begin(), layers.end(), name);
    if (found == layers.end()) throw OptionError("freeze", "has '" + name + "', not a layer (conv1 .. conv5, fc6 .. fc8)");
    return static_cast<size_t>(found - layers.begin());
  };
  std::vector<bool> frozen(layers.size(), false);
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const auto range = item.find("..");
    if (range == std::string::npos) {
      frozen[index(item.empty() ? "?" : item, 0)] = true;
      continue;
    }
    const auto first = index(item.substr(0, range), 0), last = index(item.substr(range + 2), layers.size() - 1);
    if (first > last) throw OptionError("freeze", "has '" + item + "', a range that runs backwards");
    for (size_t i = first; i <= last; ++i) frozen[i] = true;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (frozen[i]) out.push_back(layers[i]);
  }
  return out;
}

// Multipliers as text: "fc8=10,fc7.bias=2", layers in order.
std::string lr_mult_text(const std::map<std::string, double>& mult) {
  std::string out;
  for (const auto& layer : layer_names()) {
    for (const auto& [name, k] : mult) {
      if (name != layer && name.rfind(layer + ".", 0) != 0) continue;
      auto number = text_of(k);  // exact, shortest; "10", not "10.0"
      if (number.size() > 2 && number.compare(number.size() - 2, 2, ".0") == 0) number.resize(number.size() - 2);
      out += (out.empty() ? "" : ",") + name + "=" + number;
    }
  }
  return out;
}

std::map<std::string, double> parse_lr_mult(const std::string& text) {
  std::map<std::string, double> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) throw OptionError("lr_mult", "has '" + item + "', not LAYER=MULTIPLIER (fc8=10)");
    out[item.substr(0, eq)] = parse_number<double>("lr_mult", item.substr(eq + 1));
  }
  return out;
}

#define ALEXNET_SETTING(PART, NAME, KIND, GET, SET, SAFE, HELP, CHOICES)                           \
  Entry {                                                                                          \
    #NAME, KIND, [](const RunConfig& c) { const auto& o = c.PART(); return GET; },                 \
        [](RunConfig& c, const std::string& t) { auto& o = c.PART(); SET; }, SAFE, HELP, CHOICES   \
  }
#define ALEXNET_TRAIN_SETTING(...) ALEXNET_SETTING(train, __VA_ARGS__)
#define ALEXNET_TRAINER_SETTING(...) ALEXNET_SETTING(trainer, __VA_ARGS__)

const std::vector<Entry>& table() {
  static const std::vector<Entry> table{
      {"data", Kind::kText, [](const RunConfig& c) { return c.data(); },
       [](RunConfig& c, const std::string& t) { c.data(t); }, false, "Training data: an image folder, list file or packed set", {}},
      {"val", Kind::kText, [](const RunConfig& c) { return c.val(); },
       [](RunConfig& c, const std::string& t) { c.val(t); }, false, "Validation data, evaluated after every epoch (none: no validation)", {}},
      {"stats", Kind::kText, [](const RunConfig& c) { return c.stats(); },
       [](RunConfig& c, const std::string& t) { c.stats(t); }, false, "Statistics file (alexnet stats); none: computed into RUN/stats.pt", {}},
      {"weights", Kind::kText, [](const RunConfig& c) { return c.weights(); },
       [](RunConfig& c, const std::string& t) { c.weights(t); }, false,
       "Fine-tune: start from this checkpoint (best.pt, last.pt, a converted torchvision or Caffe model); none: from scratch", {}},
      {"arch", Kind::kText, [](const RunConfig& c) { return c.arch(); },
       [](RunConfig& c, const std::string& t) {
         const auto& known = preset_names();
         if (std::find(known.begin(), known.end(), t) == known.end()) {
           throw OptionError("arch", "takes one of paper, caffe, torchvision, got '" + t + "'");
         }
         c.arch(t);
       },
       false, "The network's preset", preset_names()},
      {"input_size", Kind::kWhole, [](const RunConfig& c) { return std::to_string(c.input_size()); },
       [](RunConfig& c, const std::string& t) { c.input_size(whole<int64_t>("input_size", t)); }, false, "Side of the crops the network sees (0: the preset's)", {}},
      {"init", Kind::kText, [](const RunConfig& c) { return c.init() ? name_of(*c.init()) : std::string(); },
       [](RunConfig& c, const std::string& t) {
         c.init(t.empty() ? c10::optional<Init>() : c10::optional<Init>(choice<Init>("init", t)));
       },
       false, "How weights and biases start (none: the preset's)", name_list<Init>()},
      {"dropout", Kind::kReal, [](const RunConfig& c) { return text_of(c.dropout()); },
       [](RunConfig& c, const std::string& t) { c.dropout(real("dropout", t)); }, false, "Dropout probability on fc6 and fc7 (Section 4.2)", {}},
      {"activation", Kind::kText, [](const RunConfig& c) { return name_of(c.activation()); },
       [](RunConfig& c, const std::string& t) { c.activation(choice<Activation>("activation", t)); }, false,
       "The non-linearity: relu (Section 3.1) or tanh (Figure 1's alternative)", name_list<Activation>()},
      {"towers", Kind::kWhole, [](const RunConfig& c) { return std::to_string(c.towers()); },
       [](RunConfig& c, const std::string& t) { c.towers(whole<int64_t>("towers", t)); }, false,
       "2: the paper's towers; 1: one tower with half the kernels (conv5 and fc full), Section 3.2's alternative", {}},
      {"lrn", Kind::kSwitch, [](const RunConfig& c) { return c.lrn() ? "true" : "false"; },
       [](RunConfig& c, const std::string& t) { c.lrn(flag("lrn", t)); }, false,
       "Local response normalisation after conv1 and conv2 (Section 3.3); off: none", {}},
      {"pool_size", Kind::kWhole, [](const RunConfig& c) { return std::to_string(c.pool_size()); },
       [](RunConfig& c, const std::string& t) { c.pool_size(whole<int64_t>("pool_size", t)); }, false,
       "Max pooling's window z (Section 3.4: 3, overlapping; 2 with stride 2: not)", {}},
      {"pool_stride", Kind::kWhole, [](const RunConfig& c) { return std::to_string(c.pool_stride()); },
       [](RunConfig& c, const std::string& t) { c.pool_stride(whole<int64_t>("pool_stride", t)); }, false,
       "Max pooling's stride s (Section 3.4: 2)", {}},
      {"devices", Kind::kText, [](const RunConfig& c) { return devices_text(c.devices()); },
       [](RunConfig& c, const std::string& t) { c.devices(parse_devices(t)); }, true, "cpu, cuda:0, or cuda:0,cuda:1 (one tower each)", {}},
      {"execution", Kind::kText, [](const RunConfig& c) { return name_of(c.execution()); },
       [](RunConfig& c, const std::string& t) { c.execution(choice<Execution>("execution", t)); }, true, "How the towers run", name_list<Execution>()},
      ALEXNET_TRAIN_SETTING(epochs, Kind::kWhole, std::to_string(o.epochs()), o.epochs(whole<int64_t>("epochs", t)), true, "Passes over the training set", {}),
      ALEXNET_TRAIN_SETTING(batch_size, Kind::kWhole, std::to_string(o.batch_size()),
                            o.batch_size(whole<int64_t>("batch_size", t)), false, "Examples per step (per process under data parallelism)", {}),
      ALEXNET_TRAINER_SETTING(lr, Kind::kReal, text_of(o.lr()), o.lr(real("lr", t)), false, "Learning rate", {}),
      ALEXNET_TRAINER_SETTING(momentum, Kind::kReal, text_of(o.momentum()), o.momentum(real("momentum", t)), false, "Momentum", {}),
      ALEXNET_TRAINER_SETTING(weight_decay, Kind::kReal, text_of(o.weight_decay()),
                            o.weight_decay(real("weight_decay", t)), false, "Weight decay, times the learning rate in the update", {}),
      ALEXNET_TRAIN_SETTING(lr_policy, Kind::kText, name_of(o.lr_policy()),
                            o.lr_policy(choice<LrPolicy>("lr_policy", t)), false, "plateau (divide by 10 when validation stalls), step (times lr_factor every step_epochs) or fixed", name_list<LrPolicy>()),
      ALEXNET_TRAIN_SETTING(patience, Kind::kWhole, std::to_string(o.patience()), o.patience(whole<int64_t>("patience", t)),
                            false, "Epochs without a better validation error before the plateau policy divides", {}),
      ALEXNET_TRAIN_SETTING(step_epochs, Kind::kWhole, std::to_string(o.step_epochs()),
                            o.step_epochs(whole<int64_t>("step_epochs", t)), false, "Epochs between falls under the step policy", {}),
      ALEXNET_TRAIN_SETTING(lr_factor, Kind::kReal, text_of(o.lr_factor()), o.lr_factor(real("lr_factor", t)), false, "What the step policy multiplies the rate by", {}),
      ALEXNET_TRAIN_SETTING(workers, Kind::kWhole, std::to_string(o.workers()), o.workers(whole<int64_t>("workers", t)), true, "Data loading threads (0: in the training thread)", {}),
      ALEXNET_TRAIN_SETTING(seed, Kind::kWhole, std::to_string(o.seed()),
                            o.seed(whole<uint64_t>("seed", t)), false, "Seeds initialisation, data order, augmentation and dropout", {}),
      ALEXNET_TRAIN_SETTING(resize, Kind::kWhole, std::to_string(o.resize()), o.resize(whole<int64_t>("resize", t)), false, "Side images are brought to before cropping (Section 2)", {}),
      ALEXNET_TRAIN_SETTING(random_crops, Kind::kSwitch, o.random_crops() ? "true" : "false",
                            o.random_crops(flag("random_crops", t)), false,
                            "Random crops of the resized images (Section 4.1); off: the centre crop", {}),
      ALEXNET_TRAIN_SETTING(flips, Kind::kSwitch, o.flips() ? "true" : "false", o.flips(flag("flips", t)), false,
                            "Random horizontal reflections (Section 4.1); off: none", {}),
      ALEXNET_TRAIN_SETTING(pca_std, Kind::kReal, text_of(o.pca_std()), o.pca_std(real("pca_std", t)), false, "PCA colour noise: standard deviation of alpha (0: off)", {}),
      ALEXNET_TRAIN_SETTING(ten_crop, Kind::kSwitch, o.ten_crop() ? "true" : "false", o.ten_crop(flag("ten_crop", t)),
                            false, "Validate on ten crops instead of the centre crop", {}),
      ALEXNET_TRAIN_SETTING(on_error, Kind::kText, name_of(o.on_error()),
                            o.on_error(choice<data::OnError>("on_error", t)), true, "Unreadable images: fail (stop) or skip (leave out and count)", name_list<data::OnError>()),
      ALEXNET_TRAINER_SETTING(precision, Kind::kText, name_of(o.precision()),
                            o.precision(choice<Precision>("precision", t)), false, "fp32; bf16 (autocast, CPU or CUDA); fp16 (autocast and loss scaling, CUDA); auto (bf16 on CPUs that multiply in bf16, else fp32; the run records which)", name_list<Precision>()),
      ALEXNET_TRAINER_SETTING(channels_last, Kind::kSwitch, o.channels_last() ? "true" : "false",
                            o.channels_last(flag("channels_last", t)), false, "Channels-last (NHWC) convolutions, faster on GPUs (always on on CPUs)", {}),
      ALEXNET_TRAIN_SETTING(mean, Kind::kText, o.mean() ? name_of(*o.mean()) : std::string(),
                            o.mean(t.empty() ? c10::optional<Mean>() : c10::optional<Mean>(choice<Mean>("mean", t))),
                            false, "Subtract the mean image or the channel means (none: image for two towers, channels for torchvision)", name_list<Mean>()),
      ALEXNET_TRAIN_SETTING(normalize, Kind::kText, name_of(o.normalize()), o.normalize(choice<Normalize>("normalize", t)),
                            false, "Fine-tuning: normalise as the weights were trained (their mean, std and sizes) or with the new data's statistics", name_list<Normalize>()),
      ALEXNET_TRAINER_SETTING(freeze, Kind::kText, frozen_text(o.freeze()), o.freeze(parse_frozen(t)), false,
                              "Layers that do not train: conv1..conv5 (the feature extractor), ..conv3, fc7.., or a list (conv1,conv2)", {}),
      ALEXNET_TRAINER_SETTING(lr_mult, Kind::kText, lr_mult_text(o.lr_mult()), o.lr_mult(parse_lr_mult(t)), false,
                              "Caffe's lr_mult: learning-rate multipliers per layer or parameter (fc8=10,fc7.bias=2)", {}),
      ALEXNET_TRAINER_SETTING(tf32, Kind::kSwitch, o.tf32() ? "true" : "false", o.tf32(flag("tf32", t)), false, "Allow TensorFloat-32 on CUDA (Ampere and later): faster, 10-bit mantissa products", {}),
  };
  return table;
}

#undef ALEXNET_TRAIN_SETTING
#undef ALEXNET_TRAINER_SETTING
#undef ALEXNET_SETTING

const Entry& entry(const std::string& name) {
  for (const auto& s : table()) {
    if (name == s.name) return s;
  }
  throw std::invalid_argument("unknown run setting '" + name + "'");
}

constexpr const char* kConfigKey = "run/config";
constexpr const char* kProgressKey = "run/progress";

// The configuration of a run written before checkpoints held it: options.txt's
// "flag=value" lines, as the command line spelled them (batch-size, skip-bad, ...).
RunConfig legacy_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("run '" + fs::path(path).parent_path().string() + "': its last.pt holds no configuration and it has no options.txt");
  RunConfig config;
  for (const auto& line : detail::text_lines(std::string(std::istreambuf_iterator<char>(in), {}))) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto key = line.substr(0, eq);
    auto value = line.substr(eq + 1);
    std::replace(key.begin(), key.end(), '-', '_');
    if (key == "skip_bad") key = "on_error", value = value == "1" ? "skip" : "fail";
    if (std::none_of(table().begin(), table().end(), [&](const Entry& s) { return key == s.name; })) continue;
    config.set(key, value);
  }
  // Those runs subtracted per-channel means (their checkpoints hold no mean image).
  config.train().mean(Mean::kChannels);
  return config;
}

// The configuration that `last` (a checkpoint of the run in `dir`) was written with.
RunConfig stored_config(const std::string& dir, const CheckpointExtras& extras) {
  const auto found = extras.strings.find(kConfigKey);
  if (found != extras.strings.end()) return RunConfig::from_json(found->second);
  return legacy_config((fs::path(dir) / "options.txt").string());
}

std::string last_of(const std::string& dir) { return (fs::path(dir) / "last.pt").string(); }

// What a run has done besides the trainer's own counters: the schedule's memory, the
// running sums of the epoch in progress (kept across a stop and resume), and every
// finished epoch's figures. One JSON record in last.pt.
struct Progress {
  double best_error = 2;  // best validation top-1 error so far
  int64_t bad_epochs = 0;
  double loss_sum = 0, correct = 0, seen = 0, seconds = 0;
  std::vector<EpochMetrics> history;

  std::string to_json() const {
    detail::Json j;
    j["best_error"] = best_error;
    j["bad_epochs"] = bad_epochs;
    j["loss_sum"] = loss_sum;
    j["correct"] = correct;
    j["seen"] = seen;
    j["seconds"] = seconds;
    j["history"] = detail::Json::array();
    for (const auto& h : history) j["history"].push_back(detail::Json::parse(h.to_json()));
    return detail::dump(j);
  }
  static Progress from_json(const std::string& text) {
    const detail::Record r(text, "run progress");
    Progress p;
    p.best_error = r.real("best_error");
    p.bad_epochs = r.whole("bad_epochs");
    p.loss_sum = r.real("loss_sum");
    p.correct = r.real("correct");
    p.seen = r.real("seen");
    p.seconds = r.real("seconds");
    const auto& history = r.at("history");
    if (!history.is_array()) throw std::invalid_argument("run progress: 'history' is not a list");
    for (const auto& h : history) p.history.push_back(EpochMetrics::from_json(h.dump()));
    return p;
  }
};

int64_t digest(const void* data, size_t n, uint64_t hash = 1469598103934665603ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) hash = (hash ^ p[i]) * 1099511628211ull;  // FNV-1a
  return static_cast<int64_t>(hash);
}
int64_t digest(const std::string& text) { return digest(text.data(), text.size()); }
int64_t digest(const std::vector<std::string>& lines) {
  std::string all;
  for (const auto& l : lines) all += l + '\n';
  return digest(all);
}
int64_t digest(std::initializer_list<torch::Tensor> tensors) {
  uint64_t hash = 1469598103934665603ull;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    const auto c = t.to(torch::kCPU).contiguous();
    hash = static_cast<uint64_t>(digest(c.data_ptr(), c.nbytes(), hash));
  }
  return static_cast<int64_t>(hash);
}

// Under data parallelism every rank must train the same thing: the same data (size
// and class names, in order), network, statistics and settings (devices apart). Each
// rank's facts go to all through one all-reduce; every rank then stops with the same
// line naming the first difference, instead of training silently on data that means
// different things on different ranks.
void check_agreement(ProcessGroup& group, const data::Source& train, const data::Source* val,
                     const AlexNetOptions& model, const data::Statistics& stats, RunConfig config) {
  config.devices({c10::Device(c10::kCPU)});
  struct Fact {
    const char* what;
    int64_t value;
    bool count;  // a number worth showing, not a digest
  };
  const std::vector<Fact> facts{
      {"the training set's size", static_cast<int64_t>(train.size()), true},
      {"the training class names and their order", digest(train.classes()), false},
      {"the validation set's size", val ? static_cast<int64_t>(val->size()) : -1, true},
      {"the validation class names", val ? digest(val->classes()) : 0, false},
      {"the network", digest(model.to_json()), false},
      {"the statistics (mean, colour components)", digest({stats.mean_image, stats.mean_rgb, stats.eigenvalues,
                                                           stats.eigenvectors}),
       false},
      {"the settings (all but the devices)", digest(config.to_json()), false},
  };
  const auto world = group.size(), rank = group.rank();
  const auto f = static_cast<int64_t>(facts.size());
  auto all = torch::zeros({world, f}, torch::kLong);
  for (int64_t i = 0; i < f; ++i) all[rank][i] = facts[static_cast<size_t>(i)].value;
  group.sum(all);
  const auto a = all.accessor<int64_t, 2>();
  for (int64_t i = 0; i < f; ++i) {
    for (int r = 1; r < world; ++r) {
      if (a[r][i] == a[0][i]) continue;
      const auto& fact = facts[static_cast<size_t>(i)];
      throw std::runtime_error(
          "data parallel: ranks 0 and " + std::to_string(r) + " disagree on " + fact.what +
          (fact.count ? " (" + std::to_string(a[0][i]) + " images against " + std::to_string(a[r][i]) + ")" : "") +
          ": every rank must train on the same data with the same settings");
    }
  }
}

// Every setting that needs no reading of the data, checked once, before anything is made.
void check(const RunConfig& c) {
  validate(c.train());
  validate(c.trainer());
  if (c.data().empty()) throw OptionError("data", "is required: the training data (an image folder, list file or packed set)");
  for (const auto& [name, path] : {std::pair<const char*, std::string>{"data", c.data()}, {"val", c.val()}}) {
    if (!path.empty() && !fs::exists(path)) throw OptionError(name, "'" + path + "' does not exist");
  }
  if (!c.stats().empty() && !fs::exists(c.stats())) {
    throw OptionError("stats", "'" + c.stats() + "' does not exist (alexnet stats writes it)");
  }
  resolve(c.trainer().precision(), c.devices());  // fp16 off CUDA refused before anything is made
}

// The network a run trains: the preset's, or the one `base` describes (the weights a
// run fine-tunes, or its last.pt) with the run's classes, dropout, devices and
// execution, and its input size or initialisation where the configuration gives one.
AlexNetOptions network_of(const RunConfig& c, const AlexNetOptions* base, int64_t classes) {
  if (!base) return c.model(classes);
  auto o = *base;
  o.num_classes(classes).dropout(c.dropout()).devices(c.devices());
  if (o.architecture() == Architecture::kTwoTower) o.execution(c.execution());  // one tower: grouped
  if (c.input_size() > 0) o.input_size(c.input_size());
  if (c.init()) o.init(*c.init());
  return o;
}

// The checks of `network` that need no data: its own, and its crop within the resize.
void check_network(const RunConfig& c, const AlexNetOptions& network) {
  if (network.input_size() > c.train().resize()) {
    throw OptionError("input_size", std::to_string(network.input_size()) + " is larger than resize " +
                                        std::to_string(c.train().resize()) + ": the crop must fit the resized image");
  }
  validate(network);  // the network's own checks (an input too small, devices, ...)
}

// The paper's name of a grouped state dict's key ("fc6.weight"; torchvision's
// "classifier.1.weight" is fc6's).
std::string layer_of_key(const std::string& key) {
  static const std::vector<std::pair<std::string, std::string>> torchvision{
      {"features.0.", "conv1"}, {"features.3.", "conv2"}, {"features.6.", "conv3"}, {"features.8.", "conv4"},
      {"features.10.", "conv5"}, {"classifier.1.", "fc6"}, {"classifier.4.", "fc7"}, {"classifier.6.", "fc8"}};
  for (const auto& [prefix, name] : torchvision) {
    if (key.rfind(prefix, 0) == 0) return name + key.substr(prefix.size() - 1);
  }
  return key;
}

// Fine-tuning's start: every tensor of `source` into `model` bit for bit, fc8's rows by
// class name (a class of `classes` that `source_classes` holds keeps its row; the
// others keep the fresh rows `model` was made with). Returns how many classes kept
// their rows. Throws naming the layer and both shapes when one cannot be loaded.
int64_t load_pretrained(const AlexNetImpl& source, const std::vector<std::string>& source_classes, AlexNetImpl& model,
                        const std::vector<std::string>& classes, const std::string& path) {
  std::map<std::string, torch::Tensor> from;
  for (auto& [key, tensor] : to_state_dict(source)) from[key] = tensor;
  auto to = to_state_dict(model);
  int64_t kept = 0;
  for (auto& [key, tensor] : to) {
    const auto& s = from.at(key);  // one architecture: the same keys
    const auto layer = layer_of_key(key);
    if (layer.rfind("fc8.", 0) == 0) {
      tensor = tensor.clone();
      kept = 0;
      std::vector<std::string> known;  // compared in NFC (data::nfc)
      for (const auto& name : source_classes) known.push_back(data::nfc(name));
      for (size_t c = 0; c < classes.size(); ++c) {
        const auto found = std::find(known.begin(), known.end(), data::nfc(classes[c]));
        if (found == known.end()) continue;
        tensor[static_cast<int64_t>(c)].copy_(s[found - known.begin()]);
        ++kept;
      }
      continue;
    }
    if (s.sizes() != tensor.sizes()) {
      throw std::runtime_error("weights '" + path + "': " + layer + " is " + c10::str(s.sizes()) + " there and " +
                               c10::str(tensor.sizes()) + " here (input " + std::to_string(model.options.input_size()) +
                               ", the weights' " + std::to_string(source.options.input_size()) +
                               "): fine-tune at the weights' input size");
    }
    tensor = s;
  }
  load_state_dict(model, to, path);
  return kept;
}

// One process at a time in a run's folder: an advisory lock (flock) on RUN/.lock, which
// holds the holder's pid. The kernel drops it when the holder ends, however it ends, so
// a lock file left by a dead process does not block.
class FolderLock {
 public:
  explicit FolderLock(const std::string& dir) {
    const auto path = (fs::path(dir) / ".lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error("run '" + dir + "': cannot open " + path + ": " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char text[32] = {};
      const auto n = ::pread(fd_, text, sizeof(text) - 1, 0);
      ::close(fd_);
      fd_ = -1;
      std::string held(text, n > 0 ? static_cast<size_t>(n) : 0);
      const auto pid = to_number<long>(held.substr(0, held.find('\n')));
      throw std::runtime_error("run '" + dir + "' is in use by process " + (pid ? std::to_string(*pid) : "(unknown)") +
                               ": one process at a time (wait for it, or stop it)");
    }
    const auto pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
      // The lock holds without the pid; a refusal then names no process.
    }
  }
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;
  ~FolderLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock; the file stays (removing it would race a new holder)
  }

 private:
  int fd_ = -1;
};

// A new run's folder: made empty for it, and put back as it was unless `keep` is
// called (the run failed to start). An overwritten run waits beside it until then.
class FolderGuard {
 public:
  FolderGuard(std::string dir, bool overwrite) : dir_(std::move(dir)) {
    std::error_code error;
    if (fs::exists(dir_, error) && !fs::is_empty(dir_, error)) {
      if (!overwrite) throw RunExists(dir_);
      old_lock_ = std::make_unique<FolderLock>(dir_);  // never overwrite a run that is training
      aside_ = dir_ + ".old-" + std::to_string(::getpid());
      fs::rename(dir_, aside_);
    }
    made_ = !fs::exists(dir_, error);
    fs::create_directories(dir_);
  }
  FolderGuard(const FolderGuard&) = delete;
  FolderGuard& operator=(const FolderGuard&) = delete;
  ~FolderGuard() {
    std::error_code error;
    if (kept_) {
      if (!aside_.empty()) fs::remove_all(aside_, error);
      return;
    }
    if (made_ || !aside_.empty()) {
      fs::remove_all(dir_, error);
    } else {  // an empty folder that was there before stays, emptied
      for (const auto& e : fs::directory_iterator(dir_, error)) fs::remove_all(e.path(), error);
    }
    if (!aside_.empty()) fs::rename(aside_, dir_, error);
  }
  void keep() { kept_ = true; }

 private:
  std::string dir_, aside_;
  bool made_ = false, kept_ = false;
  std::unique_ptr<FolderLock> old_lock_;  // the overwritten run's, until it is gone or back
};

}  // namespace

template <>
const std::vector<std::pair<std::string, Normalize>>& names<Normalize>() {
  static const std::vector<std::pair<std::string, Normalize>> table{{"weights", Normalize::kWeights},
                                                                     {"data", Normalize::kData}};
  return table;
}

template <>
const std::vector<std::pair<std::string, LrPolicy>>& names<LrPolicy>() {
  static const std::vector<std::pair<std::string, LrPolicy>> table{
      {"plateau", LrPolicy::kPlateau}, {"step", LrPolicy::kStep}, {"fixed", LrPolicy::kFixed}};
  return table;
}

void validate(const TrainOptions& o) {
  auto number = [](double v) { return c10::str(v); };
  auto positive = [&](const char* name, double v) {
    if (!(v > 0) || !std::isfinite(v)) throw OptionError(name, "must be positive, got " + number(v));
  };
  auto at_least = [&](const char* name, double v, double low) {
    if (!(v >= low) || !std::isfinite(v)) throw OptionError(name, "must be at least " + number(low) + ", got " + number(v));
  };
  positive("epochs", static_cast<double>(o.epochs()));
  positive("batch_size", static_cast<double>(o.batch_size()));
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
  const detail::Record r(line, "an epoch's figures");
  EpochMetrics m;
  m.epoch = r.whole("epoch");
  m.train_loss = r.real("train_loss");
  m.train_top1 = r.real("train_top1");
  m.val_loss = r.real("val_loss");
  m.val_top1 = r.real("val_top1");
  m.val_top5 = r.real("val_top5");
  m.lr = r.real("lr");
  m.images_per_second = r.real("images_per_second");
  m.seconds = r.real("seconds");
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

AlexNetOptions RunConfig::model(int64_t classes) const {
  auto options = preset(arch(), input_size()).num_classes(classes).dropout(dropout()).devices(devices()).execution(
      execution());
  if (init()) options.init(*init());
  const bool alternative = activation() != Activation::kReLU || towers() != 2 || !lrn() || pool_size() != 3 ||
                           pool_stride() != 2;
  if (alternative && options.architecture() == Architecture::kTorchvision) {
    throw OptionError("arch", "torchvision has none of the paper's alternatives (activation, towers, lrn, pooling): "
                              "use the paper or caffe preset");
  }
  if (towers() != 1 && towers() != 2) throw OptionError("towers", "takes 2 (the paper's) or 1, got " + std::to_string(towers()));
  options.activation(activation()).pool_size(pool_size()).pool_stride(pool_stride());
  if (!lrn()) options.lrn(c10::nullopt);
  if (towers() == 1) options.architecture(Architecture::kOneTower).lrn_across_towers(false);
  return options;
}

const std::vector<RunConfig::Setting>& RunConfig::settings() {
  static const std::vector<RunConfig::Setting> out = [] {
    std::vector<RunConfig::Setting> all;
    for (const auto& s : table()) all.push_back({s.name, s.help, s.choices, s.kind, s.safe_to_change});
    for (auto& s : all) {
      if (s.name == "precision") s.help += ". Here: " + describe(cpu_bf16());  // found at run time
    }
    return all;
  }();
  return out;
}

std::string RunConfig::get(const std::string& name) const { return entry(name).get(*this); }

void RunConfig::set(const std::string& name, const std::string& text) { entry(name).set(*this, text); }

std::string RunConfig::to_json() const {
  detail::Json out;
  for (const auto& s : table()) {
    const auto text = s.get(*this);
    switch (s.kind) {
      case Kind::kText: out[s.name] = text; break;
      case Kind::kWhole: case Kind::kReal: out[s.name] = detail::Json::parse(text); break;
      case Kind::kSwitch: out[s.name] = text == "true"; break;
    }
  }
  return detail::dump(out);
}

RunConfig RunConfig::from_json(const std::string& text) {
  const detail::Record in(text, "run configuration");
  RunConfig config;
  for (const auto& s : table()) {
    if (!in.has(s.name)) continue;  // a setting added since: its default
    const auto& v = in.at(s.name);
    config.set(s.name, v.is_string() ? v.get<std::string>() : v.dump());
  }
  return config;
}

struct Run::Impl {
  std::string dir;
  RunConfig config;
  RunOptions options;
  AlexNetOptions network;  // what the run trains (its classes set once the data is open)
  c10::optional<std::pair<AlexNet, Preprocessing>> pretrained;  // fine-tuning's weights, at create
  bool writer = true;
  std::vector<std::string> changes;
  std::shared_ptr<data::Source> train, val;  // val's labels already the training classes'
  data::Statistics stats;
  Preprocessing pre;
  std::unique_ptr<Trainer> trainer;
  Progress progress;
  std::unique_ptr<FolderLock> lock;  // the writer's, for the run's life

  bool parallel() const { return options.group() && options.group()->size() > 1; }
  void info(const std::string& text) const {
    if (writer && options.hooks().on_info) options.hooks().on_info(text);
  }
  // Opens the data, computes or loads the statistics, builds the network and its
  // trainer, and (when `resume`) takes back the state in last.pt.
  void open(bool resume);
  void save_last() const {
    auto extras = trainer->state();
    pre.add_to(extras);
    extras.strings[kConfigKey] = config.to_json();
    extras.strings[kProgressKey] = progress.to_json();
    save(*trainer->model(), last_of(dir), extras);
  }
  void save_best() const {
    CheckpointExtras extras;
    pre.add_to(extras);
    save(*trainer->model(), (fs::path(dir) / "best.pt").string(), extras);
  }
};

void Run::Impl::open(bool resume) {
  const auto& c = config;
  if (resume && writer) detail::remove_orphan_temporaries(dir);  // a killed save's
  auto train_source = data::open_source(c.data());
  auto val_source = c.val().empty() ? nullptr : data::open_source(c.val());
  for (const auto* source : {train_source.get(), val_source.get()}) {
    if (source && !data::describe_left_out(*source).empty() && options.hooks().on_warning && writer) {
      options.hooks().on_warning(data::describe_left_out(*source));
    }
  }
  const auto& classes = train_source->classes();
  if (classes.size() < 2) {
    throw std::invalid_argument("training data '" + c.data() + "' has " + std::to_string(classes.size()) +
                                " class: a classifier needs at least 2");
  }
  CheckpointExtras stored;
  if (resume) {
    stored = read_extras(last_of(dir));
    const auto before = Preprocessing::from(stored, last_of(dir)).classes;
    if (before != classes) {
      throw std::runtime_error("run '" + dir + "': the training data '" + c.data() + "' has " +
                               std::to_string(classes.size()) + " classes now, and the run was trained on " +
                               std::to_string(before.size()) + (before.size() == classes.size() ? " others" : "") +
                               ": resume it on the data it was trained on");
    }
  }
  // The network first, from the seed alone (the statistics draw no random numbers).
  manual_seed(c.train().seed());
  AlexNet model(network.num_classes(static_cast<int64_t>(classes.size())));

  const auto stats_path = c.stats().empty() ? (fs::path(dir) / "stats.pt").string() : c.stats();
  if (fs::exists(stats_path)) {
    stats = data::Statistics::load(stats_path);
  } else if (c.stats().empty()) {
    info("computing the training set's statistics (alexnet stats) into " + stats_path);
    stats = data::compute_statistics(*train_source, c.train().resize(), std::max<int64_t>(1, c.train().workers()),
                                     c.train().on_error(), nullptr, options.hooks().stop);
    if (writer) stats.save(stats_path);
  } else {
    throw OptionError("stats", "'" + c.stats() + "' does not exist (alexnet stats writes it)");
  }
  // The validation data's labels by name, once: its classes may come in another order,
  // or be some of them.
  std::string subset;
  if (val_source) val_source = data::match_classes(val_source, classes, &subset);
  if (!subset.empty()) info(subset);
  if (parallel()) check_agreement(*options.group(), *train_source, val_source.get(), model->options, stats, c);
  if (resume) {
    pre = Preprocessing::from(stored, last_of(dir));  // what it trained with, whatever came since
  } else if (pretrained && c.train().normalize() == Normalize::kWeights) {
    pre = pretrained->second;  // the input the weights were trained on (its resize is the run's)
    pre.classes = classes;
    pre.crop = model->options.input_size();
  } else {
    const auto mean = c.train().mean().value_or(
        model->options.architecture() == Architecture::kTorchvision ? Mean::kChannels : Mean::kImage);
    pre = Preprocessing::from_statistics(classes, mean, stats.mean_image, stats.mean_rgb, c.train().resize(),
                                         model->options.input_size());
  }
  if (pretrained) {
    const auto& source_classes = pretrained->second.classes;
    const auto kept = load_pretrained(*pretrained->first, source_classes, *model, classes, c.weights());
    std::string frozen;
    if (!c.trainer().freeze().empty()) frozen = "; frozen: " + c.get("freeze");
    if (!c.trainer().lr_mult().empty()) frozen += "; lr_mult " + c.get("lr_mult");
    info("fine-tuning from " + c.weights() + ": every layer loaded, fc8 " + std::to_string(kept) + " of the " +
         std::to_string(classes.size()) + " classes kept (of its " + std::to_string(source_classes.size()) + "), " +
         std::to_string(static_cast<int64_t>(classes.size()) - kept) + " new; input normalised with " +
         (c.train().normalize() == Normalize::kWeights ? "the weights' preprocessing" : "this data's statistics") +
         frozen);
    pretrained.reset();  // its memory back before training
  }
  train = std::move(train_source);
  val = std::move(val_source);
  trainer = std::make_unique<Trainer>(model, c.trainer());
  if (resume) {
    load_weights(*trainer->model(), last_of(dir), &stored);
    trainer->restore(stored, last_of(dir));
    const auto found = stored.strings.find(kProgressKey);
    if (found == stored.strings.end()) {
      throw std::runtime_error("checkpoint '" + last_of(dir) + "': has no run progress to resume from");
    }
    try {
      progress = Progress::from_json(found->second);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error("checkpoint '" + last_of(dir) + "': malformed " + e.what());
    }
    info("resuming " + dir + " after " + std::to_string(trainer->epoch()) + " epochs");
    const auto config_found = stored.strings.find(kConfigKey);
    if (writer && (config_found == stored.strings.end() || config_found->second != c.to_json())) {
      save_last();  // the changed configuration, for the next resume
    }
  }
  if (writer) {
    std::string text;
    for (const auto& s : table()) text += std::string(s.name) + "=" + s.get(c) + "\n";
    detail::write_file_atomically((fs::path(dir) / "options.txt").string(), text, "run options");
  }
  if (parallel()) trainer->distribute(*options.group());
}

Run::Run(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Run::~Run() = default;
Run::Run(Run&&) noexcept = default;
Run& Run::operator=(Run&&) noexcept = default;

Run Run::create(const std::string& dir, RunConfig config, RunOptions options) {
  auto m = std::make_unique<Impl>();
  m->dir = dir;
  m->writer = lead_rank(options.group());
  // Every setting is checked before anything is made or read.
  check(config);
  const auto asked = config.trainer().precision();
  config.trainer().precision(resolve(asked, config.devices()));
  if (!config.weights().empty()) {
    // Fine-tuning: the weights' network; their sizes unless the new data's statistics
    // are asked for. Read before the folder is made: a wrong file leaves nothing.
    m->pretrained = load_for_inference(config.weights());
    m->network = network_of(config, &m->pretrained->first->options, 2);
    if (config.train().normalize() == Normalize::kWeights) config.train().resize(m->pretrained->second.resize);
  } else {
    m->network = network_of(config, nullptr, 2);
  }
  check_network(config, m->network);
  m->config = std::move(config);
  m->options = std::move(options);
  if (asked == Precision::kAuto) {
    m->info("precision auto: " + name_of(m->config.trainer().precision()) + " (" + describe(cpu_bf16()) + ")");
  }
  std::optional<FolderGuard> folder;
  if (m->writer) {
    folder.emplace(dir, m->options.overwrite());
    m->lock = std::make_unique<FolderLock>(dir);
  }
  // The other ranks read nothing of the folder before rank 0 has made it.
  if (m->parallel()) m->options.group()->barrier();
  m->open(/*resume=*/false);
  if (folder) folder->keep();
  return Run(std::move(m));
}

RunConfig Run::config_of(const std::string& dir) {
  const auto last = last_of(dir);
  if (!fs::exists(last)) {
    throw std::runtime_error("run '" + dir + "': no last.pt, so nothing to resume (a run writes it after its first "
                             "epoch, and when stopped)");
  }
  return stored_config(dir, read_extras(last));
}

Run Run::resume(const std::string& dir, const Edit& edit, RunOptions options) {
  const auto stored = config_of(dir);
  auto config = stored;
  if (edit) edit(config);
  config.trainer().precision(resolve(config.trainer().precision(), config.devices()));
  auto m = std::make_unique<Impl>();
  m->dir = dir;
  m->writer = lead_rank(options.group());
  for (const auto& s : table()) {
    const auto before = s.get(stored), after = s.get(config);
    if (before == after) continue;
    if (!s.safe_to_change && !options.allow_changes()) {
      throw ChangeRefused(s.name, "is " + (before.empty() ? std::string("unset") : "'" + before + "'") + " in run '" +
                                      dir + "' and '" + after + "' now: the run would differ from an uninterrupted one");
    }
    m->changes.push_back(std::string(s.name) + " " + (before.empty() ? "(unset)" : before) + " -> " + after);
  }
  check(config);
  // The network last.pt holds (fine-tuned ones need their weights no more).
  const auto stored_network = read_options(last_of(dir));
  m->network = network_of(config, &stored_network, 2);
  check_network(config, m->network);
  m->config = std::move(config);
  m->options = std::move(options);
  if (m->writer) m->lock = std::make_unique<FolderLock>(dir);
  m->open(/*resume=*/true);
  return Run(std::move(m));
}

Run::Outcome Run::fit() {
  auto& m = *impl_;
  // The folder is this process's from create or resume until fit returns or throws.
  if (m.writer && !m.lock) m.lock = std::make_unique<FolderLock>(m.dir);
  struct Release {
    Impl& m;
    ~Release() { m.lock.reset(); }
  } release{m};
  auto& trainer = *m.trainer;
  auto& p = m.progress;
  const auto& o = m.config.train();
  const auto& hooks = m.options.hooks();
  const auto& model = trainer.model();
  const auto what = m.config.weights().empty() ? m.config.arch() : m.config.weights();
  m.info("training " + what + " (" + std::to_string(model->options.num_classes()) + " classes, input " +
         std::to_string(model->options.input_size()) + "x" + std::to_string(model->options.input_size()) + ") for " +
         std::to_string(o.epochs()) + " epochs into " + m.dir);
  const int64_t crop = model->options.input_size();
  const int64_t batch_size = o.batch_size();
  const auto device = model->tower_devices().front();
  data::ImageDataset train_set(m.train, data::TransformOptions()
                                            .resize(o.resize())
                                            .crop(crop)
                                            .pca_std(o.pca_std())
                                            .random_crop(o.random_crops())
                                            .flip(o.flips())
                                            .seed(o.seed())
                                            .on_error(o.on_error()),
                               m.stats);
  auto* group = m.options.group();
  const size_t rank = group ? static_cast<size_t>(group->rank()) : 0;
  const size_t world = group ? static_cast<size_t>(group->size()) : 1;
  if (m.parallel()) {
    m.info("global batch " + std::to_string(batch_size * static_cast<int64_t>(world)) + " (" +
           std::to_string(batch_size) + " per rank x " + std::to_string(world) + " ranks)");
  }
  const auto inference = InferenceOptions()
                              .ten_crop(o.ten_crop())
                              .batch_size(batch_size)
                              .workers(o.workers())
                              .on_error(o.on_error())
                              // Alone, a stop ends validation too; replicas validate
                              // together to the end (none may leave the others waiting).
                              .stop(m.parallel() ? nullptr : hooks.stop);
  auto warn = [&](const std::string& text) {
    if (hooks.on_warning) hooks.on_warning(text);
  };

  while (trainer.epoch() < o.epochs()) {
    const auto epoch = trainer.epoch();
    data::EpochSampler sampler(m.train->size(), o.seed(), /*shuffle=*/true, rank, world);
    sampler.set_epoch(epoch, static_cast<size_t>(trainer.steps_in_epoch() * batch_size));
    train_set.set_epoch(epoch);
    const auto shard = static_cast<int64_t>(sampler.shard_size());
    const int64_t steps = (shard + batch_size - 1) / batch_size;
    // LibTorch's loader queues max_jobs batches for its workers at the start of each
    // epoch; with no workers nobody would take them, and those batches were lost.
    auto loader_options = torch::data::DataLoaderOptions(static_cast<size_t>(batch_size))
                              .workers(static_cast<size_t>(o.workers()));
    if (o.workers() > 0) loader_options.max_jobs(static_cast<size_t>(2 * o.workers() + 1));
    auto loader = torch::data::make_data_loader(train_set, sampler, loader_options);
    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    for (auto& batch : *loader) {
      if (m.parallel()) {
        // Each rank its own dropout, reproducible after a resume without saving every
        // rank's generator.
        manual_seed(mix_seed(o.seed(), rank, static_cast<uint64_t>(epoch),
                             static_cast<uint64_t>(trainer.steps_in_epoch())));
      }
      const auto x = data::normalize(batch, m.pre, device);
      const auto result = trainer.step(x, batch.labels, hooks.stop && hooks.stop->load());
      if (!result.warning.empty()) warn(result.warning);
      if (std::isfinite(result.loss)) {  // an overflowing float16 step counts in no figure
        const auto n = static_cast<double>(batch.labels.size(0));
        p.loss_sum += result.loss * n;
        p.correct += static_cast<double>(result.correct);
        p.seen += n;
      }
      if (hooks.on_step && m.writer) {
        hooks.on_step(epoch + 1, trainer.steps_in_epoch(), steps, result.loss, p.seen / (p.seconds + elapsed()));
      }
      if (result.stop) {
        p.seconds += elapsed();
        if (m.writer) m.save_last();
        return Outcome::kStopped;
      }
    }
    p.seconds += elapsed();

    EpochMetrics metrics;
    metrics.epoch = epoch + 1;
    double loss_sum = p.loss_sum, correct = p.correct, seen = p.seen;
    if (m.parallel()) {  // the whole world's figures, not an average of averages
      const auto counts = torch::tensor({loss_sum, correct, seen}, torch::kDouble);
      group->sum(counts);
      loss_sum = counts[0].item<double>();
      correct = counts[1].item<double>();
      seen = counts[2].item<double>();
    }
    metrics.train_loss = seen > 0 ? loss_sum / seen : std::nan("");
    metrics.train_top1 = seen > 0 ? correct / seen : std::nan("");
    metrics.lr = trainer.lr();
    metrics.images_per_second = p.seconds > 0 ? seen / p.seconds : 0;
    metrics.val_loss = metrics.val_top1 = metrics.val_top5 = std::numeric_limits<double>::quiet_NaN();
    bool improved = !m.val;  // without validation data the latest weights are the best known
    if (m.val) {
      Evaluation e;
      try {
        e = detail::evaluate_matched(trainer.model(), m.val, m.pre, inference, group);
      } catch (const Stopped&) {
        // Every step of the epoch is taken: a resume trains none and validates.
        if (m.writer) m.save_last();
        return Outcome::kStopped;
      }
      metrics.val_loss = e.loss;
      metrics.val_top1 = e.top1;
      metrics.val_top5 = e.top5;
      improved = 1 - e.top1 < p.best_error;
      if (improved) {
        p.best_error = 1 - e.top1;
        p.bad_epochs = 0;
      } else {
        ++p.bad_epochs;
      }
    }
    metrics.seconds = p.seconds;
    if (o.lr_policy() == LrPolicy::kPlateau && p.bad_epochs >= o.patience()) {
      trainer.set_lr(trainer.lr() * 0.1);  // Section 5: "divide the learning rate by 10"
      p.bad_epochs = 0;
    } else if (o.lr_policy() == LrPolicy::kStep && (epoch + 1) % o.step_epochs() == 0) {
      trainer.set_lr(trainer.lr() * o.lr_factor());
    }
    trainer.next_epoch();
    p.loss_sum = p.correct = p.seen = p.seconds = 0;
    p.history.push_back(metrics);
    if (m.writer) {
      // last.pt last: until it is in place a resume repeats this epoch, which writes
      // best.pt and metrics.jsonl again, so a kill between the three loses nothing.
      if (improved) m.save_best();
      std::string lines;
      for (const auto& h : p.history) lines += h.to_json() + "\n";
      detail::write_file_atomically((fs::path(m.dir) / "metrics.jsonl").string(), lines, "metrics");
      m.save_last();
    }
    if (m.parallel()) {
      trainer.check_replicas();
      m.info("data parallel: the " + std::to_string(world) + " replicas' weights are identical after epoch " +
             std::to_string(trainer.epoch()));
    }
    if (hooks.on_epoch && m.writer) hooks.on_epoch(metrics);
  }
  return Outcome::kFinished;
}

const std::string& Run::dir() const { return impl_->dir; }
const RunConfig& Run::config() const { return impl_->config; }
const std::vector<std::string>& Run::changes() const { return impl_->changes; }
Trainer& Run::trainer() { return *impl_->trainer; }
const Preprocessing& Run::preprocessing() const { return impl_->pre; }
const std::vector<EpochMetrics>& Run::history() const { return impl_->progress.history; }
std::string Run::last() const { return last_of(impl_->dir); }
std::string Run::best() const { return (fs::path(impl_->dir) / "best.pt").string(); }

}  // namespace alexnet
