#include <alexnet/checkpoint.h>
#include <alexnet/data/source.h>
#include <alexnet/distributed.h>
#include <alexnet/error.h>
#include <alexnet/run.h>
#include <alexnet/runtime.h>

#include "atomic_file.h"
#include "json.h"
#include "text.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

namespace alexnet {
namespace fs = std::filesystem;
namespace {

enum class Kind { kText, kWhole, kReal, kFlag };

// One setting of a RunConfig: its name, its kind (for JSON), how to read and write it
// as text, and whether changing it at a resume leaves the run as an uninterrupted one
// would have been.
struct Setting {
  const char* name;
  Kind kind;
  std::function<std::string(const RunConfig&)> get;
  std::function<void(RunConfig&, const std::string&)> set;
  bool safe_to_change;
  const char* help;
  std::vector<std::string> choices;
};

std::string text_of(double v) { return detail::Json(v).dump(); }

// `text` read whole by `read` (std::stoll, std::stod), or OptionError naming the setting.
template <typename T>
T number_in(const std::string& name, const std::string& text, T (*read)(const std::string&, size_t*),
            const char* what) {
  try {
    size_t used = 0;
    const T v = read(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw OptionError(name, std::string("takes ") + what + ", got '" + text + "'");
}

int64_t whole(const std::string& name, const std::string& text) {
  return number_in<long long>(name, text, [](const std::string& t, size_t* used) { return std::stoll(t, used); },
                              "a whole number");
}

double real(const std::string& name, const std::string& text) {
  return number_in<double>(name, text, [](const std::string& t, size_t* used) { return std::stod(t, used); },
                           "a number");
}

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

#define ALEXNET_TRAIN_SETTING(NAME, KIND, GET, SET, SAFE, HELP, CHOICES)                           \
  Setting {                                                                                        \
    #NAME, KIND, [](const RunConfig& c) { const auto& o = c.train(); return GET; },                \
        [](RunConfig& c, const std::string& t) { auto& o = c.train(); SET; }, SAFE, HELP, CHOICES  \
  }

const std::vector<Setting>& table() {
  static const std::vector<Setting> table{
      {"data", Kind::kText, [](const RunConfig& c) { return c.data(); },
       [](RunConfig& c, const std::string& t) { c.data(t); }, false, "Training data: an image folder, list file or packed set", {}},
      {"val", Kind::kText, [](const RunConfig& c) { return c.val(); },
       [](RunConfig& c, const std::string& t) { c.val(t); }, false, "Validation data, evaluated after every epoch (none: no validation)", {}},
      {"stats", Kind::kText, [](const RunConfig& c) { return c.stats(); },
       [](RunConfig& c, const std::string& t) { c.stats(t); }, false, "Statistics file (alexnet stats); none: computed into RUN/stats.pt", {}},
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
       [](RunConfig& c, const std::string& t) { c.input_size(whole("input_size", t)); }, false, "Side of the crops the network sees (0: the preset's)", {}},
      {"init", Kind::kText, [](const RunConfig& c) { return c.init() ? name_of(*c.init()) : std::string(); },
       [](RunConfig& c, const std::string& t) {
         c.init(t.empty() ? c10::optional<Init>() : c10::optional<Init>(choice<Init>("init", t)));
       },
       false, "How weights and biases start (none: the preset's)", name_list<Init>()},
      {"dropout", Kind::kReal, [](const RunConfig& c) { return text_of(c.dropout()); },
       [](RunConfig& c, const std::string& t) { c.dropout(real("dropout", t)); }, false, "Dropout probability on fc6 and fc7 (Section 4.2)", {}},
      {"devices", Kind::kText, [](const RunConfig& c) { return devices_text(c.devices()); },
       [](RunConfig& c, const std::string& t) { c.devices(parse_devices(t)); }, true, "cpu, cuda:0, or cuda:0,cuda:1 (one tower each)", {}},
      {"execution", Kind::kText, [](const RunConfig& c) { return name_of(c.execution()); },
       [](RunConfig& c, const std::string& t) { c.execution(choice<Execution>("execution", t)); }, true, "How the towers run", name_list<Execution>()},
      ALEXNET_TRAIN_SETTING(epochs, Kind::kWhole, std::to_string(o.epochs()), o.epochs(whole("epochs", t)), true, "Passes over the training set", {}),
      ALEXNET_TRAIN_SETTING(batch_size, Kind::kWhole, std::to_string(o.batch_size()),
                            o.batch_size(whole("batch_size", t)), false, "Examples per step (per process under data parallelism)", {}),
      ALEXNET_TRAIN_SETTING(lr, Kind::kReal, text_of(o.lr()), o.lr(real("lr", t)), false, "Learning rate", {}),
      ALEXNET_TRAIN_SETTING(momentum, Kind::kReal, text_of(o.momentum()), o.momentum(real("momentum", t)), false, "Momentum", {}),
      ALEXNET_TRAIN_SETTING(weight_decay, Kind::kReal, text_of(o.weight_decay()),
                            o.weight_decay(real("weight_decay", t)), false, "Weight decay, times the learning rate in the update", {}),
      ALEXNET_TRAIN_SETTING(lr_policy, Kind::kText, name_of(o.lr_policy()),
                            o.lr_policy(choice<LrPolicy>("lr_policy", t)), false, "plateau (divide by 10 when validation stalls), step (times lr_factor every step_epochs) or fixed", name_list<LrPolicy>()),
      ALEXNET_TRAIN_SETTING(patience, Kind::kWhole, std::to_string(o.patience()), o.patience(whole("patience", t)),
                            false, "Epochs without a better validation error before the plateau policy divides", {}),
      ALEXNET_TRAIN_SETTING(step_epochs, Kind::kWhole, std::to_string(o.step_epochs()),
                            o.step_epochs(whole("step_epochs", t)), false, "Epochs between falls under the step policy", {}),
      ALEXNET_TRAIN_SETTING(lr_factor, Kind::kReal, text_of(o.lr_factor()), o.lr_factor(real("lr_factor", t)), false, "What the step policy multiplies the rate by", {}),
      ALEXNET_TRAIN_SETTING(workers, Kind::kWhole, std::to_string(o.workers()), o.workers(whole("workers", t)), true, "Data loading threads (0: in the training thread)", {}),
      ALEXNET_TRAIN_SETTING(seed, Kind::kWhole, std::to_string(o.seed()),
                            o.seed(static_cast<uint64_t>(whole("seed", t))), false, "Seeds initialisation, data order, augmentation and dropout", {}),
      ALEXNET_TRAIN_SETTING(resize, Kind::kWhole, std::to_string(o.resize()), o.resize(whole("resize", t)), false, "Side images are brought to before cropping (Section 2)", {}),
      ALEXNET_TRAIN_SETTING(pca_std, Kind::kReal, text_of(o.pca_std()), o.pca_std(real("pca_std", t)), false, "PCA colour noise: standard deviation of alpha (0: off)", {}),
      ALEXNET_TRAIN_SETTING(ten_crop, Kind::kFlag, o.ten_crop() ? "true" : "false", o.ten_crop(flag("ten_crop", t)),
                            false, "Validate on ten crops instead of the centre crop", {}),
      ALEXNET_TRAIN_SETTING(on_error, Kind::kText, name_of(o.on_error()),
                            o.on_error(choice<data::OnError>("on_error", t)), true, "Unreadable images: fail (stop) or skip (leave out and count)", name_list<data::OnError>()),
      ALEXNET_TRAIN_SETTING(precision, Kind::kText, name_of(o.precision()),
                            o.precision(choice<Precision>("precision", t)), false, "fp32; bf16 (autocast, CPU or CUDA); fp16 (autocast and loss scaling, CUDA)", name_list<Precision>()),
      ALEXNET_TRAIN_SETTING(channels_last, Kind::kFlag, o.channels_last() ? "true" : "false",
                            o.channels_last(flag("channels_last", t)), false, "Channels-last (NHWC) convolutions, faster on GPUs (always on for bf16 on CPUs)", {}),
      ALEXNET_TRAIN_SETTING(mean, Kind::kText, o.mean() ? name_of(*o.mean()) : std::string(),
                            o.mean(t.empty() ? c10::optional<Mean>() : c10::optional<Mean>(choice<Mean>("mean", t))),
                            false, "Subtract the mean image or the channel means (none: image for two towers, channels for torchvision)", name_list<Mean>()),
      ALEXNET_TRAIN_SETTING(tf32, Kind::kFlag, o.tf32() ? "true" : "false", o.tf32(flag("tf32", t)), false, "Allow TensorFloat-32 on CUDA (Ampere and later): faster, 10-bit mantissa products", {}),
  };
  return table;
}

#undef ALEXNET_TRAIN_SETTING

const Setting& setting(const std::string& name) {
  for (const auto& s : table()) {
    if (name == s.name) return s;
  }
  throw std::invalid_argument("unknown run setting '" + name + "'");
}

constexpr const char* kConfigKey = "run/config";

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
    if (std::find_if(table().begin(), table().end(), [&](const Setting& s) { return key == s.name; }) ==
        table().end()) {
      continue;
    }
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
      {"the network", digest(options_to_string(model)), false},
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

}  // namespace

AlexNetOptions RunConfig::model(int64_t classes) const {
  auto options = preset(arch(), input_size()).num_classes(classes).dropout(dropout()).devices(devices()).execution(
      execution());
  if (init()) options.init(*init());
  return options;
}

const std::vector<RunConfig::Setting>& RunConfig::settings() {
  static const std::vector<RunConfig::Setting> out = [] {
    std::vector<RunConfig::Setting> all;
    for (const auto& s : table()) all.push_back({s.name, s.help, s.choices, s.kind == Kind::kFlag});
    for (auto& s : all) {
      if (s.name == "precision") s.help += ". Here: " + describe(cpu_bf16());  // found at run time
    }
    return all;
  }();
  return out;
}

std::string RunConfig::get(const std::string& name) const { return setting(name).get(*this); }

void RunConfig::set(const std::string& name, const std::string& text) { setting(name).set(*this, text); }

std::string RunConfig::to_json() const {
  detail::Json out;
  for (const auto& s : table()) {
    const auto text = s.get(*this);
    switch (s.kind) {
      case Kind::kText: out[s.name] = text; break;
      case Kind::kWhole: out[s.name] = std::stoll(text); break;
      case Kind::kReal: out[s.name] = std::stod(text); break;
      case Kind::kFlag: out[s.name] = text == "true"; break;
    }
  }
  return detail::dump(out);
}

RunConfig RunConfig::from_json(const std::string& text) {
  detail::Json in;
  try {
    in = detail::Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("run configuration: not JSON (" + std::string(e.what()) + ")");
  }
  RunConfig config;
  for (const auto& s : table()) {
    if (!in.contains(s.name)) continue;  // a setting added since: its default
    const auto& v = in[s.name];
    config.set(s.name, v.is_string() ? v.get<std::string>() : v.dump());
  }
  return config;
}

struct Run::Impl {
  std::string dir;
  RunConfig config;
  TrainHooks hooks;
  std::unique_ptr<Trainer> trainer;
};

void Run::check(const RunConfig& c) {
  validate(c.train());
  if (c.data().empty()) throw OptionError("data", "is required: the training data (an image folder, list file or packed set)");
  for (const auto& [name, path] : {std::pair<const char*, std::string>{"data", c.data()}, {"val", c.val()}}) {
    if (!path.empty() && !fs::exists(path)) throw OptionError(name, "'" + path + "' does not exist");
  }
  const auto probe = c.model(2);
  if (probe.input_size() > c.train().resize()) {
    throw OptionError("input_size", std::to_string(probe.input_size()) + " is larger than resize " +
                                        std::to_string(c.train().resize()) + ": the crop must fit the resized image");
  }
  validate(probe);  // the network's own checks (an input too small, devices, ...)
}

void Run::prepare(const std::string& dir, const RunConfig& config, bool overwrite) {
  check(config);
  std::error_code error;
  if (fs::exists(dir, error) && !fs::is_empty(dir, error)) {
    if (!overwrite) throw RunExists(dir);
    fs::remove_all(dir);
  }
  fs::create_directories(dir);
}

RunConfig Run::resume_config(const std::string& dir, const RunConfig& given, const std::vector<std::string>& given_names,
                             bool allow_changes, std::vector<std::string>* changes) {
  const auto last = last_of(dir);
  if (!fs::exists(last)) {
    throw std::runtime_error("run '" + dir + "': no last.pt, so nothing to resume (a run writes it after its first "
                             "epoch, and when stopped)");
  }
  auto config = stored_config(dir, read_extras(last));
  for (const auto& name : given_names) {
    const auto& s = setting(name);
    const auto before = s.get(config), after = s.get(given);
    if (before == after) continue;
    if (!s.safe_to_change && !allow_changes) {
      throw ChangeRefused(name, "is " + (before.empty() ? std::string("unset") : "'" + before + "'") + " in run '" +
                                    dir + "' and '" + after +
                                    "' now: the run would differ from an uninterrupted one");
    }
    s.set(config, after);
    if (changes) changes->push_back(std::string(s.name) + " " + (before.empty() ? "(unset)" : before) + " -> " + after);
  }
  return config;
}

Run::Run(std::string dir, RunConfig config, bool resume, ProcessGroup* group, TrainHooks hooks)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.dir = std::move(dir);
  m.config = std::move(config);
  m.hooks = std::move(hooks);
  const auto& c = m.config;
  const bool writer = !group || group->rank() == 0;
  auto info = [&](const std::string& text) {
    if (m.hooks.on_info) m.hooks.on_info(text);
  };
  // Every setting is checked before anything slow (reading the data's statistics).
  check(c);
  auto train = data::open_source(c.data());
  auto val = c.val().empty() ? nullptr : data::open_source(c.val());
  const auto classes = static_cast<int64_t>(train->classes().size());
  if (classes < 2) {
    throw std::invalid_argument("training data '" + c.data() + "' has " + std::to_string(classes) +
                                " class: a classifier needs at least 2");
  }
  // The network first, from the seed alone (the statistics draw no random numbers).
  manual_seed(c.train().seed());
  AlexNet model(c.model(classes));

  const auto stats_path = c.stats().empty() ? (fs::path(m.dir) / "stats.pt").string() : c.stats();
  data::Statistics stats;
  if (fs::exists(stats_path)) {
    stats = data::Statistics::load(stats_path);
  } else if (c.stats().empty()) {
    info("computing the training set's statistics (alexnet stats) into " + stats_path);
    stats = data::compute_statistics(*train, c.train().resize(), std::max<int64_t>(1, c.train().workers()),
                                     c.train().on_error());
    if (writer) stats.save(stats_path);
  } else {
    throw OptionError("stats", "'" + c.stats() + "' does not exist (alexnet stats writes it)");
  }

  std::string subset;
  if (val) val = data::match_classes(val, train->classes(), &subset);
  if (!subset.empty()) info(subset);
  if (group && group->size() > 1) check_agreement(*group, *train, val.get(), model->options, stats, c);
  m.trainer = std::make_unique<Trainer>(model, train, val, stats, c.train());
  m.trainer->checkpoint_extras().strings[kConfigKey] = c.to_json();
  if (resume) {
    CheckpointExtras stored;
    m.trainer->restore(last(), &stored);
    info("resuming " + m.dir + " after " + std::to_string(m.trainer->epochs_done()) + " epochs");
    const auto found = stored.strings.find(kConfigKey);
    if (writer && (found == stored.strings.end() || found->second != c.to_json())) {
      m.trainer->save(last());  // the changed configuration, for the next resume
    }
  }
  if (writer) {
    std::string text;
    for (const auto& s : table()) text += std::string(s.name) + "=" + s.get(c) + "\n";
    detail::write_file_atomically((fs::path(m.dir) / "options.txt").string(), text, "run options");
  }
  if (group && group->size() > 1) m.trainer->distribute(*group);
}

Run::~Run() = default;
Run::Run(Run&&) noexcept = default;
Run& Run::operator=(Run&&) noexcept = default;

Trainer::Outcome Run::fit() {
  const auto& m = *impl_;
  const auto& o = m.trainer->model()->options;
  if (m.hooks.on_info) {
    m.hooks.on_info("training " + m.config.arch() + " (" + std::to_string(o.num_classes()) + " classes, input " +
                    std::to_string(o.input_size()) + "x" + std::to_string(o.input_size()) + ") for " +
                    std::to_string(m.config.train().epochs()) + " epochs into " + m.dir);
  }
  return m.trainer->fit(m.dir, m.hooks);
}

const std::string& Run::dir() const { return impl_->dir; }
const RunConfig& Run::config() const { return impl_->config; }
Trainer& Run::trainer() { return *impl_->trainer; }
std::string Run::last() const { return last_of(impl_->dir); }
std::string Run::best() const { return (fs::path(impl_->dir) / "best.pt").string(); }

}  // namespace alexnet
