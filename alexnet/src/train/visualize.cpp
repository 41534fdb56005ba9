#include <alexnet/data/source.h>
#include <alexnet/network/numbers.h>
#include <alexnet/network/preprocessing.h>
#include <alexnet/train/inference.h>
#include <alexnet/train/visualize.h>

#include "network/atomic_file.h"
#include "network/json.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

namespace alexnet {
namespace {

data::Image from_canvas(const cv::Mat& bgr) {
  data::Image out;
  out.height = bgr.rows;
  out.width = bgr.cols;
  out.channels = 3;
  out.pixels.resize(static_cast<size_t>(bgr.rows * bgr.cols * 3));
  cv::Mat dst(bgr.rows, bgr.cols, CV_8UC3, out.pixels.data());
  cv::cvtColor(bgr, dst, cv::COLOR_BGR2RGB);
  return out;
}

std::string tick(double v) {
  std::ostringstream out;
  out << std::setprecision(6) << v;
  return out.str();
}

struct Series {
  std::string name;
  std::vector<double> values;
  cv::Scalar colour;  // BGR
};

// One panel: axes, ticks, a title, a legend, and a line per series (NaNs skipped).
// `steps`: each value holds from its epoch to the next (a learning rate), drawn flat
// then straight up or down. The legend is a band between the title and the plot, so
// that it never covers a line.
void draw_panel(cv::Mat& canvas, const cv::Rect& area, const std::string& title, const std::vector<Series>& series,
                bool log_scale, bool steps = false) {
  const int legend_rows = static_cast<int>(series.size());
  const int left = area.x + 60, right = area.x + area.width - 15, top = area.y + 40 + 16 * legend_rows,
            bottom = area.y + area.height - 45;
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  const cv::Scalar ink(40, 40, 40), grid(225, 225, 225);
  cv::putText(canvas, title, {area.x + 60, area.y + 22}, font, 0.6, ink, 1, cv::LINE_AA);
  double lo = INFINITY, hi = -INFINITY;
  size_t epochs = 0;
  for (const auto& s : series) {
    epochs = std::max(epochs, s.values.size());
    for (double v : s.values) {
      if (!std::isfinite(v) || (log_scale && v <= 0)) continue;
      const double y = log_scale ? std::log10(v) : v;
      lo = std::min(lo, y), hi = std::max(hi, y);
    }
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-9) lo -= 0.5, hi += 0.5;
  if (!log_scale) lo = std::min(lo, 0.0);
  // Round ticks (0, 0.2, 0.4, ...; 0.001, 0.01, 0.1 on a log scale), the axis from the
  // first to the last.
  std::vector<double> ticks = log_scale ? detail::log_axis_ticks(std::pow(10.0, lo), std::pow(10.0, hi))
                                        : detail::axis_ticks(lo, hi);
  if (log_scale) {
    for (auto& t : ticks) t = std::log10(t);
  }
  lo = std::min(lo, ticks.front());
  hi = std::max(hi, ticks.back());
  auto px = [&](double epoch) {
    return left + static_cast<int>((right - left) * (epochs > 1 ? (epoch - 1) / (epochs - 1.0) : 0.5));
  };
  auto py = [&](double y) { return bottom - static_cast<int>((bottom - top) * (y - lo) / (hi - lo)); };
  for (const double y : ticks) {
    cv::line(canvas, {left, py(y)}, {right, py(y)}, grid, 1);
    cv::putText(canvas, tick(log_scale ? std::pow(10.0, y) : y), {area.x + 4, py(y) + 4}, font, 0.38, ink, 1, cv::LINE_AA);
  }
  cv::line(canvas, {left, top}, {left, bottom}, ink, 1);
  cv::line(canvas, {left, bottom}, {right, bottom}, ink, 1);
  const size_t step = std::max<size_t>(1, epochs / 10);
  for (size_t e = 1; e <= epochs; e += step) {
    cv::line(canvas, {px(double(e)), bottom}, {px(double(e)), bottom + 4}, ink, 1);
    cv::putText(canvas, std::to_string(e), {px(double(e)) - 4, bottom + 18}, font, 0.38, ink, 1, cv::LINE_AA);
  }
  cv::putText(canvas, "epoch", {(left + right) / 2 - 20, bottom + 38}, font, 0.45, ink, 1, cv::LINE_AA);
  int legend = area.y + 38;
  for (const auto& s : series) {
    std::vector<cv::Point> points, line;
    for (size_t i = 0; i < s.values.size(); ++i) {
      const double v = s.values[i];
      if (!std::isfinite(v) || (log_scale && v <= 0)) continue;
      const cv::Point p(px(double(i + 1)), py(log_scale ? std::log10(v) : v));
      if (steps && !line.empty()) line.emplace_back(p.x, line.back().y);  // flat to this epoch, then the step
      points.push_back(p);
      line.push_back(p);
    }
    if (line.size() > 1) cv::polylines(canvas, line, false, s.colour, 2, cv::LINE_AA);
    for (const auto& p : points) cv::circle(canvas, p, 3, s.colour, cv::FILLED, cv::LINE_AA);
    if (points.empty()) continue;
    cv::line(canvas, {left + 10, legend}, {left + 30, legend}, s.colour, 2, cv::LINE_AA);
    cv::putText(canvas, s.name, {left + 35, legend + 4}, font, 0.4, ink, 1, cv::LINE_AA);
    legend += 16;
  }
}

}  // namespace

namespace detail {

std::vector<double> axis_ticks(double lo, double hi, int intervals) {
  if (!(hi > lo)) hi = lo + 1;
  // A step of 1, 2 or 5 times a power of ten giving about `intervals` intervals.
  const double raw = (hi - lo) / std::max(1, intervals);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / magnitude;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  std::vector<double> out;
  const auto first = static_cast<int64_t>(std::floor(lo / step + 1e-9));
  const auto last = static_cast<int64_t>(std::ceil(hi / step - 1e-9));
  for (int64_t i = first; i <= last; ++i) {
    const double v = static_cast<double>(i) * step;
    out.push_back(std::abs(v) < step * 1e-9 ? 0.0 : to_number<double>(tick(v)).value());  // 0.6, not 0.6000000000000001
  }
  return out;
}

std::vector<double> log_axis_ticks(double lo, double hi) {
  lo = std::max(lo, 1e-300);
  if (!(hi > lo)) hi = lo * 10;
  const auto first = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  const auto last = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  // Whole decades; within two decades, 2 and 5 times them too.
  const std::vector<double> multiples =
      std::log10(hi / lo) <= 2 ? std::vector<double>{1, 2, 5} : std::vector<double>{1};
  std::vector<double> candidates;
  for (int k = first; k <= last; ++k) {
    for (const double m : multiples) {
      if (k < last || m == 1) candidates.push_back(to_number<double>(tick(m * std::pow(10.0, k))).value());
    }
  }
  size_t start = 0, end = candidates.size() - 1;
  while (start + 1 < candidates.size() && candidates[start + 1] <= lo * (1 + 1e-9)) ++start;
  while (end > start && candidates[end - 1] >= hi * (1 - 1e-9)) --end;
  return {candidates.begin() + static_cast<std::ptrdiff_t>(start), candidates.begin() + static_cast<std::ptrdiff_t>(end) + 1};
}

}  // namespace detail

void write_npy(const torch::Tensor& array, const std::string& path) {
  if (array.dim() != 2) throw std::invalid_argument("npy '" + path + "': expected a 2-D array");
  const auto data = array.to(torch::kCPU, torch::kFloat).contiguous();
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(data.size(0)) + ", " +
                       std::to_string(data.size(1)) + "), }";
  // Magic (6) + version (2) + length (2) + header, padded to a multiple of 64, ending in a newline.
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xFF);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(data.data_ptr<float>()), static_cast<size_t>(data.numel()) * sizeof(float));
  detail::write_file_atomically(path, bytes, "NumPy file");
}

void write_row_names(const std::vector<std::string>& names, const std::string& path) {
  std::string text;
  for (const auto& name : names) {
    for (const char c : name) {
      if (c == '\\') text += "\\\\";
      else if (c == '\n') text += "\\n";
      else if (c == '\r') text += "\\r";
      else text += c;
    }
    text += '\n';
  }
  detail::write_file_atomically(path, text, "row names");
}

std::vector<std::string> read_row_names(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("row names '" + path + "': cannot open");
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    std::string name;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] != '\\' || i + 1 == line.size()) {
        name += line[i];
        continue;
      }
      const char next = line[++i];
      name += next == 'n' ? '\n' : next == 'r' ? '\r' : next;
    }
    names.push_back(std::move(name));
  }
  return names;
}

torch::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("npy '" + path + "': cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    throw std::runtime_error("npy '" + path + "': not a NumPy .npy file");
  }
  const size_t length = static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
  if (bytes.size() < 10 + length) throw std::runtime_error("npy '" + path + "': truncated header");
  const std::string header = bytes.substr(10, length);
  if (header.find("'descr': '<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos) {
    throw std::runtime_error("npy '" + path + "': expected little-endian float32 in C order");
  }
  const auto open = header.find("'shape': (");
  if (open == std::string::npos) throw std::runtime_error("npy '" + path + "': no shape");
  // "(rows, cols)", maybe with a trailing comma or spaces: two whole numbers.
  const auto close = header.find(')', open);
  const auto shape = header.substr(open + 10, close == std::string::npos ? 0 : close - open - 10);
  const auto comma = shape.find(',');
  auto trimmed = [](std::string s) {
    s.erase(0, s.find_first_not_of(' '));
    s.erase(s.find_last_not_of(" ,") + 1);
    return s;
  };
  const auto rows_read = comma == std::string::npos ? std::nullopt : to_number<int64_t>(trimmed(shape.substr(0, comma)));
  const auto cols_read = comma == std::string::npos ? std::nullopt : to_number<int64_t>(trimmed(shape.substr(comma + 1)));
  if (!rows_read || !cols_read || *rows_read < 0 || *cols_read < 0 ||
      (*cols_read > 0 && *rows_read > int64_t(bytes.size()) / *cols_read)) {
    throw std::runtime_error("npy '" + path + "': expected a 2-D shape that fits the file");
  }
  const int64_t rows = *rows_read, cols = *cols_read;
  const size_t expected = 10 + length + static_cast<size_t>(rows * cols) * sizeof(float);
  if (bytes.size() != expected) throw std::runtime_error("npy '" + path + "': data size does not match the shape");
  auto out = torch::empty({rows, cols}, torch::kFloat);
  std::memcpy(out.data_ptr<float>(), bytes.data() + 10 + length, static_cast<size_t>(rows * cols) * sizeof(float));
  return out;
}

namespace {

std::string beside(const std::string& npy, const char* extension) {
  return std::filesystem::path(npy).replace_extension(extension).string();
}

}  // namespace

void write_features(const Features& f, const std::string& npy) {
  if (!f.layer) throw std::invalid_argument("features '" + npy + "': no layer to record");
  if (f.values.dim() != 2 || static_cast<size_t>(f.values.size(0)) != f.images.size()) {
    throw std::invalid_argument("features '" + npy + "': " + std::to_string(f.images.size()) + " images for values of shape " +
                                c10::str(f.values.sizes()));
  }
  detail::Json j;
  j["layer"] = name_of(*f.layer);
  j["weights"] = f.weights;
  j["rows"] = f.values.size(0);
  j["dimension"] = f.values.size(1);
  if (f.precision) j["precision"] = name_of(*f.precision);
  write_npy(f.values, npy);
  write_row_names(f.images, beside(npy, ".txt"));
  detail::write_file_atomically(beside(npy, ".json"), detail::dump(j) + "\n", "features description");
}

Features read_features(const std::string& npy) {
  Features f;
  f.values = read_npy(npy);
  const auto names = beside(npy, ".txt"), json = beside(npy, ".json");
  if (std::filesystem::exists(names)) {
    f.images = read_row_names(names);
    if (static_cast<int64_t>(f.images.size()) != f.values.size(0)) {
      throw std::runtime_error("features '" + npy + "': " + names + " names " + std::to_string(f.images.size()) +
                               " images for " + std::to_string(f.values.size(0)) + " rows");
    }
  }
  if (std::filesystem::exists(json)) {
    std::ifstream in(json, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      const detail::Record r(text, "features description '" + json + "'");
      f.layer = r.choice<Layer>("layer");
      f.weights = r.text("weights");
      if (r.has("precision")) f.precision = r.choice<Precision>("precision");
      if (r.whole("rows") != f.values.size(0) || r.whole("dimension") != f.values.size(1)) {
        throw std::invalid_argument("features description '" + json + "': describes " + detail::dump(r.at("rows")) + " x " +
                                    detail::dump(r.at("dimension")) + " values, the file holds " +
                                    c10::str(f.values.sizes()));
      }
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(e.what());
    }
  }
  return f;
}

torch::Tensor features_like(const Features& f, const std::string& image, const std::string& weights,
                            Precision precision) {
  if (!f.layer) {
    throw std::invalid_argument("the features do not say which layer they are (written before features files recorded "
                                "it): compute them again with alexnet features");
  }
  const auto& given = weights.empty() ? f.weights : weights;
  if (given.empty()) throw std::invalid_argument("the features do not name their checkpoint: give the weights");
  std::error_code error;
  if (!weights.empty() && !f.weights.empty() && std::filesystem::exists(f.weights, error) &&
      !std::filesystem::equivalent(weights, f.weights, error)) {
    throw std::invalid_argument("the features are " + name_of(*f.layer) + " activations of '" + f.weights +
                                "', not of '" + weights + "': a query must be computed with the same weights");
  }
  if (precision == Precision::kAuto && f.precision) precision = *f.precision;
  auto [model, pre] = load_for_inference(given, precision);
  const auto query = extract_features(model, data::open_image_files({image}), pre, *f.layer,
                                      InferenceOptions().batch_size(1).workers(0).precision(precision))[0];
  if (query.size(0) != f.values.size(1)) {
    throw std::invalid_argument("'" + image + "' has " + std::to_string(query.size(0)) + " " + name_of(*f.layer) +
                                " values with '" + given + "', the features " + std::to_string(f.values.size(1)));
  }
  return query;
}

std::pair<std::vector<int64_t>, std::vector<double>> nearest(const torch::Tensor& features, const torch::Tensor& query,
                                                             int64_t k, int64_t exclude) {
  auto distances = (features.to(torch::kDouble) - query.to(torch::kDouble).view({1, -1})).pow(2).sum(1).sqrt();
  if (exclude >= 0) distances[exclude] = INFINITY;
  const auto n = std::min<int64_t>(k, features.size(0) - (exclude >= 0 ? 1 : 0));
  const auto [values, indices] = distances.topk(n, 0, /*largest=*/false);
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::vector<double> dist(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    idx[static_cast<size_t>(i)] = indices[i].item<int64_t>();
    dist[static_cast<size_t>(i)] = values[i].item<double>();
  }
  return {idx, dist};
}

data::Image kernel_grid(const AlexNetImpl& model, int64_t scale) {
  std::vector<torch::Tensor> towers;
  for (const auto& l : model.learned_layers()) {
    if (l.name == "conv1") towers.push_back(l.weight.detach().to(torch::kCPU, torch::kFloat));
  }
  constexpr int kPerRow = 16, kGap = 2;
  const int k = static_cast<int>(towers.front().size(2)) * static_cast<int>(scale);
  int rows = 0;
  for (const auto& t : towers) rows += static_cast<int>((t.size(0) + kPerRow - 1) / kPerRow);
  // A caption band above each tower's block, naming it (Figure 3: the paper's GPU 1 and
  // GPU 2 are towers 0 and 1).
  constexpr int kCaption = 22;
  const int tower_gap = towers.size() > 1 ? k / 2 : 0;
  cv::Mat canvas(rows * (k + kGap) + kGap + static_cast<int>(towers.size()) * kCaption + tower_gap,
                 std::max(kPerRow * (k + kGap) + kGap, 330), CV_8UC3, cv::Scalar(255, 255, 255));
  int y0 = kGap;
  int64_t first = 0;
  for (size_t tower = 0; tower < towers.size(); ++tower) {
    const auto& t = towers[tower];
    const auto count = t.size(0);
    const auto caption =
        towers.size() > 1 ? "tower " + std::to_string(tower) + " (the paper's GPU " + std::to_string(tower + 1) +
                                "): conv1 kernels " + std::to_string(first) + "-" + std::to_string(first + count - 1)
                          : "conv1: " + std::to_string(count) + " kernels";
    cv::putText(canvas, caption, {kGap + 2, y0 + 15}, cv::FONT_HERSHEY_SIMPLEX, 0.45, {40, 40, 40}, 1, cv::LINE_AA);
    y0 += kCaption;
    first += count;
    for (int64_t i = 0; i < t.size(0); ++i) {
      // Each kernel stretched to 0..255 on its own, as the paper's figure shows them.
      auto w = t[i];
      w = (w - w.min()) / (w.max() - w.min()).clamp_min(1e-12) * 255;
      const auto rgb = w.permute({1, 2, 0}).round().to(torch::kUInt8).contiguous();
      cv::Mat kernel(static_cast<int>(rgb.size(0)), static_cast<int>(rgb.size(1)), CV_8UC3, rgb.data_ptr<uint8_t>());
      cv::Mat bgr, big;
      cv::cvtColor(kernel, bgr, cv::COLOR_RGB2BGR);
      cv::resize(bgr, big, {k, k}, 0, 0, cv::INTER_NEAREST);
      const int x = kGap + static_cast<int>(i % kPerRow) * (k + kGap);
      const int y = y0 + static_cast<int>(i / kPerRow) * (k + kGap);
      big.copyTo(canvas(cv::Rect(x, y, k, k)));
    }
    y0 += static_cast<int>((t.size(0) + kPerRow - 1) / kPerRow) * (k + kGap) + tower_gap;
  }
  return from_canvas(canvas);
}

data::Image plot_curves(const std::vector<EpochMetrics>& history) {
  if (history.empty()) throw std::invalid_argument("plot: no epochs to draw");
  Series train_loss{"train", {}, {200, 120, 40}}, val_loss{"validation", {}, {40, 40, 210}};
  Series train_err{"train top-1", {}, {200, 120, 40}}, val_err{"val top-1", {}, {40, 40, 210}},
      val_err5{"val top-5", {}, {60, 160, 60}};
  Series lr{"learning rate", {}, {120, 60, 160}};
  for (const auto& m : history) {
    train_loss.values.push_back(m.train_loss);
    val_loss.values.push_back(m.val_loss);
    train_err.values.push_back(100 * (1 - m.train_top1));
    val_err.values.push_back(100 * (1 - m.val_top1));
    val_err5.values.push_back(100 * (1 - m.val_top5));
    lr.values.push_back(m.lr);
  }
  cv::Mat canvas(420, 1320, CV_8UC3, cv::Scalar(255, 255, 255));
  draw_panel(canvas, {0, 0, 440, 420}, "loss (cross-entropy)", {train_loss, val_loss}, false);
  draw_panel(canvas, {440, 0, 440, 420}, "error (%)", {train_err, val_err, val_err5}, false);
  draw_panel(canvas, {880, 0, 440, 420}, "learning rate (log scale; each epoch's)", {lr}, true, /*steps=*/true);
  return from_canvas(canvas);
}

data::Image image_row(const std::vector<data::Image>& images, const std::vector<std::vector<std::string>>& captions,
                      int64_t side) {
  if (!captions.empty() && captions.size() != images.size()) {
    throw std::invalid_argument("image_row: " + std::to_string(captions.size()) + " captions for " +
                                std::to_string(images.size()) + " images");
  }
  constexpr int kGap = 4, kLine = 15;
  const int s = static_cast<int>(side);
  size_t lines = 0;
  for (const auto& c : captions) lines = std::max(lines, c.size());
  const int caption_height = lines ? static_cast<int>(lines) * kLine + kGap : 0;
  cv::Mat canvas(s + 2 * kGap + caption_height, static_cast<int>(images.size()) * (s + kGap) + kGap, CV_8UC3,
                 cv::Scalar(255, 255, 255));
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  const double scale = 0.36;
  for (size_t i = 0; i < images.size(); ++i) {
    const auto small = data::to_rgb(data::resize_and_crop(images[i], side, side));
    cv::Mat rgb(s, s, CV_8UC3, const_cast<uint8_t*>(small.pixels.data()));
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    const int x = kGap + static_cast<int>(i) * (s + kGap);
    bgr.copyTo(canvas(cv::Rect(x, kGap, s, s)));
    if (captions.empty()) continue;
    for (size_t l = 0; l < captions[i].size(); ++l) {
      // Cut to the image's width, with an ellipsis.
      auto text = captions[i][l];
      int baseline = 0;
      while (text.size() > 1 && cv::getTextSize(text, font, scale, 1, &baseline).width > s) text.pop_back();
      if (text.size() < captions[i][l].size() && text.size() > 2) text.replace(text.size() - 2, 2, "..");
      cv::putText(canvas, text, {x, s + kGap + kLine * static_cast<int>(l + 1)}, font, scale, {40, 40, 40}, 1,
                  cv::LINE_AA);
    }
  }
  // The query stands apart: a line after it.
  if (images.size() > 1) {
    cv::line(canvas, {s + kGap + kGap / 2, 0}, {s + kGap + kGap / 2, canvas.rows}, {0, 0, 200}, 2);
  }
  return from_canvas(canvas);
}

}  // namespace alexnet
