#include <alexnet/data/statistics.h>
#include <alexnet/network/error.h>
#include <alexnet/train/ablation.h>

#include "network/atomic_file.h"
#include "network/json.h"
#include "network/text.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>

namespace alexnet {
namespace fs = std::filesystem;
namespace {

constexpr double kNone = std::numeric_limits<double>::quiet_NaN();

const Variant& variant_named(const std::string& name) {
  for (const auto& v : paper_variants()) {
    if (v.name == name) return v;
  }
  std::string known;
  for (const auto& v : paper_variants()) known += (known.empty() ? "" : ", ") + v.name;
  throw OptionError("variants", "has no variant '" + name + "' (the paper's: " + known + ")");
}

// The variants asked for, "paper" first, each once, in paper_variants()'s order.
std::vector<Variant> chosen(const AblationOptions& o) {
  std::set<std::string> names(o.variants().begin(), o.variants().end());
  for (const auto& n : names) variant_named(n);  // each must exist
  std::vector<Variant> out;
  for (const auto& v : paper_variants()) {
    if (v.name == "paper" || names.empty() || names.count(v.name)) out.push_back(v);
  }
  return out;
}

// The config of one run: the shared one, this seed, this variant's settings.
RunConfig config_of(const RunConfig& shared, const Variant& v, int64_t seed) {
  auto c = shared;
  c.set("seed", std::to_string(seed));
  for (const auto& [name, value] : v.settings) c.set(name, value);
  return c;
}

// A variant whose settings the shared config already has is the paper's network again.
bool same_as_paper(const RunConfig& shared, const Variant& v) {
  return v.name != "paper" && config_of(shared, v, 1).to_json() == config_of(shared, paper_variants()[0], 1).to_json();
}

std::string run_dir(const std::string& dir, const Variant& v, int64_t seed) {
  return (fs::path(dir) / "runs" / (v.name + "-seed" + std::to_string(seed))).string();
}

// Settings a continued study may change: how it runs, not what it computes.
bool may_change(const std::string& name) {
  return name == "workers" || name == "devices" || name == "execution" || name == "on_error";
}

std::string options_json(const AblationOptions& o, size_t classes) {
  detail::Json out;
  out["classes"] = classes;
  out["config"] = detail::Json::parse(o.config().to_json());
  out["seeds"] = o.seeds();
  out["variants"] = o.variants();
  out["threshold"] = o.threshold();
  return detail::dump(out);
}

void check_options(const AblationOptions& o) {
  if (o.config().data().empty()) throw OptionError("data", "is needed: the training set every variant trains on");
  if (o.config().val().empty()) {
    throw OptionError("val", "is needed: the study compares validation errors (give a validation set)");
  }
  if (!o.config().weights().empty()) {
    throw OptionError("weights", "is not for a study: every variant trains from scratch");
  }
  if (o.seeds().empty()) throw OptionError("seeds", "must name at least one seed");
  if (std::set<int64_t>(o.seeds().begin(), o.seeds().end()).size() != o.seeds().size()) {
    throw OptionError("seeds", "names a seed twice");
  }
  if (!(o.threshold() > 0 && o.threshold() < 1)) {
    throw OptionError("threshold", "is a training error between 0 and 1, got " + std::to_string(o.threshold()));
  }
  for (const auto& v : chosen(o)) config_of(o.config(), v, o.seeds()[0]).model(2);  // names a bad setting now
}

double mean(const std::vector<double>& v) {
  return v.empty() ? kNone : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}
double spread(const std::vector<double>& v) {
  if (v.size() < 2) return v.empty() ? kNone : 0.0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}
double median(std::vector<double> v) {
  if (v.empty()) return kNone;
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The (fractional) epoch at which the training error first reaches `threshold`,
// interpolated linearly between epochs; epoch 0 is chance (1 - 1/classes). NaN if never.
double epochs_to(const std::vector<double>& error, double threshold, double chance) {
  if (chance <= threshold) return 0;
  double before = chance;
  for (size_t i = 0; i < error.size(); ++i) {
    if (error[i] <= threshold) {
      const double step = before - error[i];
      const double into = step > 0 ? (before - threshold) / step : 1.0;
      return static_cast<double>(i) + std::clamp(into, 0.0, 1.0);
    }
    before = error[i];
  }
  return kNone;
}

// The mean of the finite values; NaN if none.
double mean_reached(const std::vector<double>& v) {
  std::vector<double> finite;
  for (double x : v) {
    if (std::isfinite(x)) finite.push_back(x);
  }
  return mean(finite);
}

// "12.34 ± 0.56" in percent; "-" for none.
std::string percent(const std::vector<double>& v, bool sign = false) {
  if (v.empty()) return "-";
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << (sign ? std::showpos : std::noshowpos) << 100 * mean(v)
      << std::noshowpos;
  if (v.size() > 1) out << " ± " << 100 * spread(v);
  return out.str();
}

// ------------------------------------------------------------------ pictures

struct Canvas {
  cv::Mat image;
  cv::Rect plot;  // the axes' area
  double x0, x1, y0, y1;

  Canvas(int width, int height, cv::Rect area, double x_low, double x_high, double y_low, double y_high)
      : image(height, width, CV_8UC3, cv::Scalar(255, 255, 255)), plot(area), x0(x_low), x1(x_high), y0(y_low),
        y1(y_high) {}
  cv::Point at(double x, double y) const {
    const double fx = (x - x0) / (x1 - x0), fy = (y - y0) / (y1 - y0);
    return {plot.x + static_cast<int>(std::lround(fx * plot.width)),
            plot.y + plot.height - static_cast<int>(std::lround(fy * plot.height))};
  }
  void text(const std::string& s, cv::Point p, double scale = 0.45, cv::Scalar colour = {0, 0, 0}) {
    cv::putText(image, s, p, cv::FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv::LINE_AA);
  }
  void line(cv::Point a, cv::Point b, cv::Scalar colour, int thickness = 1) {
    cv::line(image, a, b, colour, thickness, cv::LINE_AA);
  }
  // A dashed segment: dashes of `on` pixels, gaps of `off`, continuing `phase` between calls.
  void dashed(cv::Point a, cv::Point b, cv::Scalar colour, double& phase, int thickness = 2, double on = 9,
              double off = 6) {
    const double length = std::hypot(b.x - a.x, b.y - a.y);
    double t = 0;
    while (t < length) {
      const double into = std::fmod(phase, on + off);
      const double left = (into < on ? on : on + off) - into;
      const double next = std::min(length, t + left);
      if (into < on) {
        auto point = [&](double s) {
          return cv::Point(static_cast<int>(std::lround(a.x + (b.x - a.x) * s / length)),
                           static_cast<int>(std::lround(a.y + (b.y - a.y) * s / length)));
        };
        line(point(t), point(next), colour, thickness);
      }
      phase += next - t;
      t = next;
    }
  }
  void frame() { cv::rectangle(image, plot, cv::Scalar(0, 0, 0), 1); }
};

std::string number_text(double v, int precision) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(precision) << v;
  return out.str();
}

void write_png(const std::string& path, const cv::Mat& image) {
  std::vector<uchar> bytes;
  if (!cv::imencode(".png", image, bytes)) throw std::runtime_error("'" + path + "': cannot encode the picture as PNG");
  detail::write_file_atomically(path, std::string(bytes.begin(), bytes.end()), "picture");
}

const VariantResult* find(const AblationReport& r, const std::string& name) {
  for (const auto& v : r.variants) {
    if (v.variant.name == name) return &v;
  }
  return nullptr;
}

// Figure 1: training error against epochs, ReLU (the paper's network) solid and tanh
// dashed, one line per seed; the threshold dotted.
cv::Mat figure1(const AblationReport& r) {
  const auto* relu = find(r, "paper");
  const auto* tanh = find(r, "tanh");
  size_t epochs = 1;
  double top = r.threshold;
  for (const auto* v : {relu, tanh}) {
    for (const auto& curve : v->train_error) {
      epochs = std::max(epochs, curve.size());
      for (double e : curve) top = std::max(top, e);
    }
  }
  top = std::min(1.0, std::ceil(top * 10 + 0.5) / 10);
  Canvas c(720, 520, cv::Rect(80, 90, 600, 360), 0, static_cast<double>(epochs), 0, top);
  c.frame();
  for (int i = 0; i <= 5; ++i) {
    const double y = top * i / 5;
    c.line(c.at(0, y), c.at(0, y) - cv::Point(5, 0), {0, 0, 0});
    c.text(number_text(y, 2), c.at(0, y) + cv::Point(-48, 5));
  }
  const size_t step = std::max<size_t>(1, epochs / 10);
  for (size_t e = 0; e <= epochs; e += step) {
    c.line(c.at(static_cast<double>(e), 0), c.at(static_cast<double>(e), 0) + cv::Point(0, 5), {0, 0, 0});
    c.text(std::to_string(e), c.at(static_cast<double>(e), 0) + cv::Point(-5, 22));
  }
  double phase = 0;
  for (double x = 0; x < static_cast<double>(epochs); x += 0.02 * static_cast<double>(epochs)) {
    c.line(c.at(x, r.threshold), c.at(x + 0.008 * static_cast<double>(epochs), r.threshold), {120, 120, 120});
  }
  const cv::Scalar blue(180, 90, 20), red(40, 40, 200);
  for (const auto* v : {relu, tanh}) {
    const bool dashed = v == tanh;
    for (const auto& curve : v->train_error) {
      phase = 0;
      for (size_t i = 1; i < curve.size(); ++i) {
        const auto a = c.at(static_cast<double>(i), curve[i - 1]), b = c.at(static_cast<double>(i + 1), curve[i]);
        if (dashed) {
          c.dashed(a, b, red, phase);
        } else {
          c.line(a, b, blue, 2);
        }
      }
      if (curve.size() == 1) cv::circle(c.image, c.at(1, curve[0]), 3, dashed ? red : blue, cv::FILLED);
    }
  }
  const double ratio = mean_reached(tanh->epochs_to_threshold) / mean_reached(relu->epochs_to_threshold);
  c.text("Figure 1: training error rate against epochs", {80, 22}, 0.6);
  c.text(std::isfinite(ratio) ? "tanh takes " + number_text(ratio, 1) + "x the epochs of ReLU to reach " +
                                    number_text(100 * r.threshold, 0) + "% (the paper: 6x, CIFAR-10)"
                              : "not reached by both: no ratio (the paper: 6x, CIFAR-10)",
         {80, 58}, 0.4);
  c.text("ReLU (the paper's network), solid; tanh, dashed; one line per seed; dotted: " +
             number_text(100 * r.threshold, 0) + "% training error",
         {80, 40}, 0.4);
  c.text("epochs", {360, 505});
  c.text("training error", {8, 80}, 0.4);
  return c.image;
}

// Each alternative's difference from the paper's network: top-1 error and the
// train-validation gap, percentage points, a dot per seed, the mean with its spread,
// and the paper's top-1 figure (ImageNet) as a red diamond where it gives one.
cv::Mat differences(const AblationReport& r) {
  std::vector<const VariantResult*> rows;
  for (const auto& v : r.variants) {
    if (v.variant.name != "paper" && !v.delta_top1.empty()) rows.push_back(&v);
  }
  double reach = 0.5;
  for (const auto* v : rows) {
    for (const auto* d : {&v->delta_top1, &v->delta_gap}) {
      for (double x : *d) reach = std::max(reach, std::abs(100 * x));
    }
    if (std::isfinite(v->variant.paper_top1)) reach = std::max(reach, v->variant.paper_top1);
  }
  reach = std::ceil(reach * 1.1 * 2) / 2;
  const int row_height = 34, top = 70;
  const int height = top + row_height * static_cast<int>(std::max<size_t>(rows.size(), 1)) + 50;
  cv::Mat image(height, 980, CV_8UC3, cv::Scalar(255, 255, 255));
  const cv::Scalar black(0, 0, 0), blue(180, 90, 20), grey(150, 150, 150), red(40, 40, 200);
  const char* titles[] = {"top-1 error, minus the paper's network's", "train-validation gap, minus the paper's"};
  for (int panel = 0; panel < 2; ++panel) {
    Canvas c(980, height, cv::Rect(150 + panel * 440, top, 360, row_height * static_cast<int>(rows.size())), -reach,
             reach, 0, 1);
    c.image = image;  // draws into the shared picture
    c.frame();
    c.line(c.at(0, 0), c.at(0, 1), grey);
    c.text(titles[panel], {c.plot.x, top - 12}, 0.45);
    for (double x : {-reach, -reach / 2, 0.0, reach / 2, reach}) {
      c.text((x > 0 ? "+" : "") + number_text(x, 1), c.at(x, 0) + cv::Point(-14, 18), 0.4);
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& v = *rows[i];
      const int y = top + row_height * static_cast<int>(i) + row_height / 2;
      if (panel == 0) c.text(v.variant.name + " (" + v.variant.section + ")", {8, y + 5}, 0.45);
      const auto& d = panel == 0 ? v.delta_top1 : v.delta_gap;
      auto x_of = [&](double value) { return c.at(100 * value, 0).x; };
      const double m = mean(d), s = spread(d);
      c.line({x_of(m - s), y}, {x_of(m + s), y}, blue, 2);
      for (double x : d) cv::circle(image, {x_of(x), y}, 3, grey, 1, cv::LINE_AA);
      cv::circle(image, {x_of(m), y}, 5, blue, cv::FILLED, cv::LINE_AA);
      if (panel == 0 && std::isfinite(v.variant.paper_top1)) {
        const int px = c.at(v.variant.paper_top1, 0).x;
        const std::vector<cv::Point> diamond{{px, y - 7}, {px + 6, y}, {px, y + 7}, {px - 6, y}};
        cv::polylines(image, diamond, true, red, 2, cv::LINE_AA);
      }
    }
    c.text("percentage points", {c.plot.x + 130, height - 12}, 0.4);
  }
  cv::putText(image, "Each alternative minus the paper's network: dots per seed, filled: mean, bar: +-1 s.d.; "
                     "red diamond: the paper's ImageNet figure",
              {8, 22}, cv::FONT_HERSHEY_SIMPLEX, 0.42, black, 1, cv::LINE_AA);
  cv::putText(image, "Positive: worse without the paper's choice (a higher error, a wider gap)", {8, 42},
              cv::FONT_HERSHEY_SIMPLEX, 0.42, black, 1, cv::LINE_AA);
  return image;
}

}  // namespace

const std::vector<Variant>& paper_variants() {
  static const std::vector<Variant> all{
      {"paper", "-", "the paper's network", {}, "", kNone, kNone},
      {"tanh", "3.1", "tanh instead of ReLU", {{"activation", "tanh"}},
       "ReLU reaches 25% training error six times faster than tanh (CIFAR-10, a four-layer net)", kNone, kNone},
      {"one_tower", "3.2", "one tower of half the kernels (conv5 and fc full size)", {{"towers", "1"}},
       "two towers: top-1 -1.7%, top-5 -1.2%", 1.7, 1.2},
      {"no_lrn", "3.3", "no local response normalisation", {{"lrn", "false"}},
       "LRN: top-1 -1.4%, top-5 -1.2%; CIFAR-10 13% -> 11% test error", 1.4, 1.2},
      {"pool_2x2", "3.4", "non-overlapping pooling, z = 2, s = 2 (same output sizes)",
       {{"pool_size", "2"}, {"pool_stride", "2"}},
       "overlapping pooling: top-1 -0.4%, top-5 -0.3%; slightly harder to overfit", 0.4, 0.3},
      {"centre_crop", "4.1", "the centre crop only: no random crops, no flips",
       {{"random_crops", "false"}, {"flips", "false"}}, "without crops and flips, substantial overfitting", kNone,
       kNone},
      {"no_pca", "4.1", "no PCA colour noise", {{"pca_std", "0"}}, "PCA colour noise: top-1 -1% or more", 1.0,
       kNone},
      {"no_dropout", "4.2", "no dropout on fc6 and fc7", {{"dropout", "0"}},
       "without dropout, substantial overfitting; with it, about twice the iterations to converge", kNone, kNone},
  };
  return all;
}

AblationOptions AblationOptions::stored(const std::string& dir) {
  const auto path = (fs::path(dir) / "ablation.json").string();
  if (!fs::exists(path)) throw std::runtime_error("'" + dir + "' holds no study (no ablation.json)");
  const detail::Record r(detail::read_text_file(path, "study"), "study '" + path + "'");
  AblationOptions o;
  o.config(RunConfig::from_json(detail::dump(r.at("config"))));
  std::vector<int64_t> seeds;
  for (const auto& s : r.at("seeds")) {
    if (!s.is_number_integer()) throw std::invalid_argument("study '" + path + "': 'seeds' holds a non-integer");
    seeds.push_back(s.get<int64_t>());
  }
  std::vector<std::string> variants;
  for (const auto& s : r.at("variants")) {
    if (!s.is_string()) throw std::invalid_argument("study '" + path + "': 'variants' holds a non-string");
    variants.push_back(s.get<std::string>());
  }
  return o.seeds(seeds).variants(variants).threshold(r.real("threshold"));
}

Run::Outcome ablate(const std::string& dir, const AblationOptions& given) {
  auto options = given;
  check_options(options);
  const auto stored_path = (fs::path(dir) / "ablation.json").string();
  auto info = [&](const std::string& text) {
    if (options.hooks().on_info) options.hooks().on_info(text);
  };
  // The data first: a wrong path is named before anything is made.
  auto shared = options.config();
  const auto source = data::open_source(shared.data());
  if (fs::exists(stored_path)) {
    // A study continues only with what it computes unchanged.
    const auto before = AblationOptions::stored(dir).config();
    for (const auto& s : RunConfig::settings()) {
      const auto was = before.get(s.name), now = options.config().get(s.name);
      if (s.name == "epochs" && options.config().train().epochs() < before.train().epochs()) {
        throw OptionError("epochs", "was " + was + " in the study '" + dir + "', now " + now +
                                        ": a study can be extended, not shortened");
      }
      if (was != now && !may_change(s.name) && s.name != "epochs") {
        throw OptionError(s.name, "was " + (was.empty() ? "none" : was) + " in the study '" + dir + "', now " +
                                      (now.empty() ? "none" : now) + ": use another folder for another study");
      }
    }
    info("continuing the study in " + dir);
  } else {
    std::error_code error;
    if (fs::exists(dir) && !fs::is_empty(dir, error)) {
      throw std::runtime_error("'" + dir + "' holds files but no study (no ablation.json): give a new or empty folder");
    }
    fs::create_directories(fs::path(dir) / "runs");
  }
  detail::write_file_atomically(stored_path, options_json(options, source->classes().size()) + "\n", "study");
  // The statistics once, for every run: the same mean image and colour components.
  if (shared.stats().empty()) {
    const auto stats = (fs::path(dir) / "stats.pt").string();
    if (!fs::exists(stats)) {
      info("computing the training set's statistics (alexnet stats) into " + stats);
      data::compute_statistics(*source, shared.train().resize(), std::max<int64_t>(1, shared.train().workers()),
                               shared.train().on_error())
          .save(stats);
    }
    shared.stats(stats);
  }
  std::vector<Variant> variants;
  for (const auto& v : chosen(options)) {
    if (same_as_paper(shared, v)) {
      info("variant " + v.name + " (" + v.change + ") is the paper's network with these settings: left out");
    } else {
      variants.push_back(v);
    }
  }
  const auto total = variants.size() * options.seeds().size();
  size_t index = 0;
  for (const auto seed : options.seeds()) {
    for (const auto& v : variants) {
      ++index;
      const auto run = run_dir(dir, v, seed);
      const auto what = v.name + ", seed " + std::to_string(seed) + " (" + std::to_string(index) + " of " +
                        std::to_string(total) + ")";
      const auto run_options = RunOptions().hooks(options.hooks());
      const bool started = fs::exists(fs::path(run) / "last.pt");
      if (started) {
        const auto metrics = (fs::path(run) / "metrics.jsonl").string();
        const auto done = fs::exists(metrics) ? read_metrics(metrics).size() : 0;  // none: stopped in epoch 1
        if (static_cast<int64_t>(done) >= shared.train().epochs()) continue;
        info(what + ": resuming at epoch " + std::to_string(done + 1));
        // The study's epochs (it may have been extended) and how it runs now.
        const auto edit = [&](RunConfig& c) {
          for (const auto& s : RunConfig::settings()) {
            if (s.name == "epochs" || may_change(s.name)) c.set(s.name, shared.get(s.name));
          }
        };
        if (Run::resume(run, edit, run_options).fit() == Run::Outcome::kStopped) return Run::Outcome::kStopped;
      } else {
        info(what + ": " + v.change);
        // A folder without last.pt is a start that stopped before its first checkpoint.
        auto created = Run::create(run, config_of(shared, v, seed), RunOptions(run_options).overwrite(true));
        if (created.fit() == Run::Outcome::kStopped) return Run::Outcome::kStopped;
      }
    }
  }
  return Run::Outcome::kFinished;
}

AblationReport ablation_report(const std::string& dir, const AblationOptions& options) {
  AblationReport report;
  report.threshold = options.threshold();
  const auto shared = AblationOptions::stored(dir).config();
  const auto epochs = shared.train().epochs();
  const auto stored = (fs::path(dir) / "ablation.json").string();
  const auto classes =
      detail::Record(detail::read_text_file(stored, "study"), "study '" + stored + "'").whole("classes");
  // Epoch 0, for the interpolation to the threshold: chance.
  const double chance = 1.0 - 1.0 / static_cast<double>(std::max<int64_t>(2, classes));
  bool any = false;
  for (const auto& v : chosen(options)) {
    VariantResult r;
    r.variant = v;
    std::vector<double> rates;
    for (const auto seed : options.seeds()) {
      const auto path = fs::path(run_dir(dir, v, seed)) / "metrics.jsonl";
      if (!fs::exists(path)) continue;
      const auto history = read_metrics(path.string());
      if (static_cast<int64_t>(history.size()) < epochs) continue;  // unfinished
      const auto& last = history.back();
      r.seeds.push_back(seed);
      r.top1.push_back(1 - last.val_top1);
      r.top5.push_back(1 - last.val_top5);
      r.gap.push_back((1 - last.val_top1) - (1 - last.train_top1));
      std::vector<double> curve, speed;
      for (const auto& m : history) {
        curve.push_back(1 - m.train_top1);
        speed.push_back(m.images_per_second);
      }
      r.train_error.push_back(curve);
      rates.push_back(mean(speed));
    }
    if (r.seeds.empty()) continue;
    any = true;
    r.images_per_second = median(rates);
    report.variants.push_back(std::move(r));
  }
  if (!any) throw std::runtime_error("study '" + dir + "': no run has finished yet");
  const auto* paper = report.variants.front().variant.name == "paper" ? &report.variants.front() : nullptr;
  for (auto& r : report.variants) {
    for (size_t i = 0; i < r.seeds.size(); ++i) {
      r.epochs_to_threshold.push_back(epochs_to(r.train_error[i], report.threshold, chance));
    }
    if (!paper || &r == paper) continue;
    for (size_t i = 0; i < r.seeds.size(); ++i) {
      const auto at = std::find(paper->seeds.begin(), paper->seeds.end(), r.seeds[i]);
      if (at == paper->seeds.end()) continue;
      const auto j = static_cast<size_t>(at - paper->seeds.begin());
      r.delta_top1.push_back(r.top1[i] - paper->top1[j]);
      r.delta_top5.push_back(r.top5[i] - paper->top5[j]);
      r.delta_gap.push_back(r.gap[i] - paper->gap[j]);
    }
  }
  return report;
}

std::string AblationReport::to_markdown() const {
  std::ostringstream out;
  const auto t = number_text(100 * threshold, 0);
  out << "| variant | section | seeds | top-1 error % | top-5 error % | top-1 vs paper | top-5 vs paper | "
         "train-val gap % | gap vs paper | images/s | epochs to "
      << t << "% train error | the paper (its choice against this) |\n";
  out << "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : variants) {
    std::vector<double> reach;
    for (double e : r.epochs_to_threshold) {
      if (std::isfinite(e)) reach.push_back(e);
    }
    std::ostringstream epochs;
    if (reach.empty()) {
      epochs << "not reached";
    } else {
      epochs << std::fixed << std::setprecision(2) << mean(reach);
      if (reach.size() > 1) epochs << " ± " << spread(reach);
      if (reach.size() < r.epochs_to_threshold.size()) {
        epochs << " (" << reach.size() << " of " << r.epochs_to_threshold.size() << " seeds)";
      }
    }
    out << "| " << r.variant.name << " | " << r.variant.section << " | " << r.seeds.size() << " | "
        << percent(r.top1) << " | " << percent(r.top5) << " | " << percent(r.delta_top1, true) << " | "
        << percent(r.delta_top5, true) << " | " << percent(r.gap) << " | " << percent(r.delta_gap, true) << " | "
        << std::fixed << std::setprecision(0) << r.images_per_second << " | " << epochs.str() << " | "
        << (r.variant.paper_effect.empty() ? "-" : r.variant.paper_effect) << " |\n";
  }
  out << "\nErrors are the last epoch's validation errors, mean ± standard deviation over seeds; \"vs paper\" "
         "is this variant's minus the paper network's on the same seed (positive: worse without the paper's "
         "choice). The gap is validation error minus the last epoch's training error (measured while "
         "training, with that variant's augmentation and dropout). Epochs to "
      << t << "% training error are interpolated between epochs (Figure 1's measure).\n";
  const VariantResult *relu = nullptr, *tanh = nullptr;
  for (const auto& r : variants) {
    if (r.variant.name == "paper") relu = &r;
    if (r.variant.name == "tanh") tanh = &r;
  }
  if (relu && tanh) {
    const double ratio = mean_reached(tanh->epochs_to_threshold) / mean_reached(relu->epochs_to_threshold);
    out << "\nFigure 1: tanh takes "
        << (std::isfinite(ratio) ? number_text(ratio, 2) + "x" : std::string("(not reached by both)"))
        << " the epochs of ReLU to reach " << t << "% training error; the paper: six times (CIFAR-10).\n";
  }
  return out.str();
}

std::string AblationReport::to_json() const {
  detail::Json out;
  out["threshold"] = threshold;
  out["variants"] = detail::Json::array();
  auto numbers = [](const std::vector<double>& v) {
    auto a = detail::Json::array();
    for (double x : v) a.push_back(detail::number(x));
    return a;
  };
  for (const auto& r : variants) {
    detail::Json v;
    v["name"] = r.variant.name;
    v["section"] = r.variant.section;
    v["change"] = r.variant.change;
    v["seeds"] = r.seeds;
    v["top1_error"] = numbers(r.top1);
    v["top5_error"] = numbers(r.top5);
    v["gap"] = numbers(r.gap);
    v["delta_top1"] = numbers(r.delta_top1);
    v["delta_top5"] = numbers(r.delta_top5);
    v["delta_gap"] = numbers(r.delta_gap);
    v["epochs_to_threshold"] = numbers(r.epochs_to_threshold);
    v["images_per_second"] = detail::number(r.images_per_second);
    auto curves = detail::Json::array();
    for (const auto& c : r.train_error) curves.push_back(numbers(c));
    v["train_error"] = curves;
    v["paper_effect"] = r.variant.paper_effect;
    v["paper_top1"] = detail::number(r.variant.paper_top1);
    v["paper_top5"] = detail::number(r.variant.paper_top5);
    out["variants"].push_back(v);
  }
  return detail::dump(out);
}

std::vector<std::string> write_ablation_report(const std::string& dir, const AblationReport& report) {
  std::vector<std::string> written;
  auto path = [&](const char* name) { return (fs::path(dir) / name).string(); };
  detail::write_file_atomically(path("ablation.md"), report.to_markdown(), "table");
  written.push_back(path("ablation.md"));
  detail::write_file_atomically(path("ablation-results.json"), report.to_json() + "\n", "table");
  written.push_back(path("ablation-results.json"));
  if (find(report, "paper") && find(report, "tanh")) {
    write_png(path("figure1.png"), figure1(report));
    written.push_back(path("figure1.png"));
  }
  const bool compared = std::any_of(report.variants.begin(), report.variants.end(),
                                    [](const VariantResult& v) { return !v.delta_top1.empty(); });
  if (compared) {
    write_png(path("differences.png"), differences(report));
    written.push_back(path("differences.png"));
  }
  return written;
}

}  // namespace alexnet
