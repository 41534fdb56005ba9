#include <alexnet/network/pooling.h>
#include <alexnet/network/summary.h>

#include "network/graph.h"

#include "network/json.h"

#include <iomanip>
#include <sstream>

namespace alexnet {
namespace {

int64_t conv_out(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}


std::string grouped(int64_t n) {
  std::string digits = std::to_string(n);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(i, ",");
  return digits;
}

std::string shape(const std::vector<int64_t>& dims) {
  std::string out;
  for (auto d : dims) out += (out.empty() ? "" : "x") + std::to_string(d);
  return out;
}

}  // namespace

ModelSummary summarize(const AlexNetImpl& model) {
  const auto& o = model.options;
  ModelSummary s;
  s.architecture = name_of(o.architecture());
  s.input_size = o.input_size();
  s.activation = name_of(o.activation());
  s.pool_size = o.pool_size();
  s.pool_stride = o.pool_stride();
  for (const auto& p : model.parameters()) s.parameters += p.numel();

  const auto learned = model.learned_layers();
  const bool towers = o.architecture() == Architecture::kTwoTower;
  const int64_t tower_count = towers ? 2 : 1;
  // learned_layers() lists each layer once per tower, in forward order.
  auto weights_of = [&](const std::string& name, int64_t t) -> const LearnedLayer& {
    for (const auto& l : learned) {
      if (l.name == name && l.tower == (towers ? t : -1)) return l;
    }
    TORCH_CHECK(false, "summary: no layer ", name);
  };
  auto learned_row = [&](const std::string& name, int64_t side) {
    for (int64_t t = 0; t < tower_count; ++t) {
      const auto& l = weights_of(name, t);
      const int64_t out = l.weight.size(0);
      const int64_t spatial = side * side;
      s.layers.push_back({name, towers ? t : -1,
                          side > 0 ? std::vector<int64_t>{out, side, side} : std::vector<int64_t>{out},
                          l.weight.numel() + l.bias.numel(),
                          l.weight.numel() * (side > 0 ? spatial : 1)});
    }
  };
  auto plain_row = [&](const std::string& name, int64_t side) {
    for (int64_t t = 0; t < tower_count; ++t) {
      const auto& previous = s.layers[s.layers.size() - static_cast<size_t>(tower_count)];
      s.layers.push_back({name, towers ? t : -1, {previous.output[0], side, side}, 0, 0});
    }
  };

  const bool ceil = o.ceil_mode();
  int64_t side = conv_out(o.input_size(), 11, 4, o.conv1_padding());
  // LRN then pooling (the paper), or pooling then LRN (CaffeNet).
  auto normalise_pool = [&](int which) {
    const auto n = std::to_string(which);
    if (o.lrn() && !o.pool_before_lrn()) plain_row("lrn" + n, side);
    side = pooled_size(side, o.pool_size(), o.pool_stride(), ceil);
    plain_row("pool" + n, side);
    if (o.lrn() && o.pool_before_lrn()) plain_row("lrn" + n, side);
  };
  learned_row("conv1", side);
  normalise_pool(1);
  learned_row("conv2", side);
  normalise_pool(2);
  learned_row("conv3", side);
  learned_row("conv4", side);
  learned_row("conv5", side);
  side = pooled_size(side, o.pool_size(), o.pool_stride(), ceil);
  plain_row("pool5", side);
  if (o.architecture() == Architecture::kTorchvision && side != 6) {
    side = 6;
    plain_row("avgpool", side);
  }
  learned_row("fc6", 0);
  learned_row("fc7", 0);
  learned_row("fc8", 0);
  for (const auto& l : s.layers) s.macs += l.macs;
  return s;
}

std::string ModelSummary::to_table() const {
  std::ostringstream out;
  out << std::left << std::setw(9) << "layer" << std::setw(7) << "tower" << std::setw(14)
      << "output" << std::right << std::setw(13) << "parameters" << std::setw(16)
      << "multiply-adds" << "\n";
  for (const auto& l : layers) {
    out << std::left << std::setw(9) << l.name << std::setw(7)
        << (l.tower < 0 ? "-" : std::to_string(l.tower)) << std::setw(14) << shape(l.output)
        << std::right << std::setw(13) << grouped(l.parameters) << std::setw(16) << grouped(l.macs)
        << "\n";
  }
  out << std::left << std::setw(30) << ("total (" + architecture + ", " +
                                        std::to_string(input_size) + "x" +
                                        std::to_string(input_size) + ")")
      << std::right << std::setw(13) << grouped(parameters) << std::setw(16) << grouped(macs)
      << "\n";
  out << "activation " << activation << ", max pooling " << pool_size << "x" << pool_size << " stride "
      << pool_stride << (pool_size > pool_stride ? " (overlapping)" : "") << "\n";
  return out.str();
}

std::string ModelSummary::to_json() const {
  detail::Json out;
  out["architecture"] = architecture;
  out["input_size"] = input_size;
  out["activation"] = activation;
  out["pool_size"] = pool_size;
  out["pool_stride"] = pool_stride;
  out["layers"] = detail::Json::array();
  for (const auto& l : layers) {
    detail::Json layer;
    layer["name"] = l.name;
    layer["tower"] = l.tower < 0 ? detail::Json(nullptr) : detail::Json(l.tower);
    layer["output"] = l.output;
    layer["parameters"] = l.parameters;
    layer["macs"] = l.macs;
    out["layers"].push_back(layer);
  }
  out["parameters"] = parameters;
  out["macs"] = macs;
  return detail::dump(out);
}

}  // namespace alexnet
