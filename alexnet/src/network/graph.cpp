#include "network/graph.h"

#include <alexnet/network/lrn.h>
#include <alexnet/network/pooling.h>

#include "network/json.h"

#include <stdexcept>

namespace alexnet::detail {
namespace {

using Kind = GraphStep::Kind;

GraphStep conv(const std::string& name, int64_t kernel, int64_t stride, int64_t padding, int64_t groups) {
  GraphStep s{Kind::kConv, name};
  s.kernel = kernel, s.stride = stride, s.padding = padding, s.groups = groups;
  return s;
}

GraphStep max_pool(int64_t kernel, int64_t stride, bool ceil) {
  GraphStep s{Kind::kMaxPool, ""};
  s.kernel = kernel, s.stride = stride, s.ceil_mode = ceil;
  return s;
}

GraphStep linear(const std::string& name) { return GraphStep{Kind::kLinear, name}; }
GraphStep relu() { return GraphStep{Kind::kRelu, ""}; }

}  // namespace

std::string preprocessing_json(const Preprocessing& pre, const std::string& mean_image_where) {
  Json j;
  j["input"] = {{"name", "images"}, {"layout", "NCHW"}, {"colour", "RGB"}, {"range", {0, 255}}};
  // The whole rule `alexnet classify` follows (data::decode_resized, then the centre
  // crop); scripts/onnx_reference.py follows it with OpenCV alone.
  j["decode"] = {{"pixels", "8-bit; 16-bit samples divided by 257"},
                 {"jpeg", "decoded at the largest reduced scale of 1/8, 1/4 and 1/2 (libjpeg's DCT scaling, "
                          "OpenCV's IMREAD_REDUCED_COLOR_n) that keeps the shorter side at least resize; "
                          "other formats at full scale"}};
  j["resize_rule"] = {
      {"aspect", "an image more than 4 times longer than wide (or the reverse) is first cut to its central square"},
      {"sides", "shorter side to resize, longer to max(resize, (longer * resize + shorter / 2) / shorter) "
                "(integer division)"},
      {"interpolation", "on uint8 pixels: area when shrinking, bilinear when enlarging"},
      {"crops", "the central resize x resize square, then its central crop x crop window, offset (resize - crop) / 2"}};
  const auto fields = Json::parse(pre.to_json());
  for (const auto& [key, value] : fields.items()) j[key] = value;
  if (!j["mean_image"].is_null()) j["mean_image"]["where"] = mean_image_where;
  return dump(j);
}

int64_t pool5_side(const AlexNetOptions& o) {
  auto pooled = [&](int64_t n) {
    // A map smaller than the window is not pooled (the network refuses such an input).
    return n < o.pool_size() ? int64_t{0} : pooled_size(n, o.pool_size(), o.pool_stride(), o.ceil_mode());
  };
  const int64_t conv1 = (o.input_size() + 2 * o.conv1_padding() - 11) / 4 + 1;
  return pooled(pooled(pooled(conv1)));
}

std::vector<GraphStep> inference_graph(const AlexNetOptions& o) {
  std::vector<GraphStep> g;
  if (o.architecture() == Architecture::kTorchvision) {
    g = {conv("features.0", 11, 4, o.conv1_padding(), 1), relu(), max_pool(3, 2, false),
         conv("features.3", 5, 1, 2, 1), relu(), max_pool(3, 2, false),
         conv("features.6", 3, 1, 1, 1), relu(), conv("features.8", 3, 1, 1, 1), relu(),
         conv("features.10", 3, 1, 1, 1), relu(), max_pool(3, 2, false)};
    // AdaptiveAvgPool2d(6): the identity at 6x6, a plain average pool at multiples of 6.
    const auto side = pool5_side(o);
    if (side != 6) {
      if (side % 6 != 0) {
        throw std::invalid_argument("torchvision's adaptive pooling from " + std::to_string(side) + "x" +
                                    std::to_string(side) + " maps (input " + std::to_string(o.input_size()) +
                                    ") to 6x6 is not a fixed pooling; export at an input whose pool5 side is a "
                                    "multiple of 6 (224)");
      }
      GraphStep pool{Kind::kAvgPool, ""};
      pool.kernel = pool.stride = side / 6;
      g.push_back(pool);
    }
    g.push_back(GraphStep{Kind::kFlatten, ""});
    for (const auto* name : {"classifier.1", "classifier.4"}) g.push_back(linear(name)), g.push_back(relu());
    g.push_back(linear("classifier.6"));
    return g;
  }
  std::vector<GraphStep> lrn;
  if (const auto& l = o.lrn()) {
    if (l->size() % 2 == 0) {
      throw std::invalid_argument("LRN window " + std::to_string(l->size()) +
                                  " is even: ONNX and Caffe centre an even window differently; only odd windows export");
    }
    GraphStep s{Kind::kLRN, ""};
    s.size = l->size();
    // The paper's alpha multiplies the sum; the averaged form divides alpha by the window.
    s.alpha = l->mode() == LRNMode::kSum ? l->alpha() * static_cast<double>(l->size()) : l->alpha();
    s.beta = l->beta(), s.k = l->k();
    // The paper's towers normalise their own maps; one tower (or Caffe's one blob) all.
    s.groups = o.lrn_across_towers() || o.architecture() == Architecture::kOneTower ? 1 : 2;
    lrn.push_back(s);
  }
  const int64_t towers = o.architecture() == Architecture::kOneTower ? 1 : 2;  // groups where a tower sees its own
  const auto act = GraphStep{o.activation() == Activation::kTanh ? Kind::kTanh : Kind::kRelu, ""};
  auto normalise_pool = [&] {
    if (!o.pool_before_lrn()) g.insert(g.end(), lrn.begin(), lrn.end());
    g.push_back(max_pool(o.pool_size(), o.pool_stride(), o.ceil_mode()));
    if (o.pool_before_lrn()) g.insert(g.end(), lrn.begin(), lrn.end());
  };
  g.push_back(conv("conv1", 11, 4, o.conv1_padding(), 1));
  g.push_back(act);
  normalise_pool();
  g.push_back(conv("conv2", 5, 1, 2, towers));
  g.push_back(act);
  normalise_pool();
  g.push_back(conv("conv3", 3, 1, 1, 1));
  g.push_back(act);
  g.push_back(conv("conv4", 3, 1, 1, towers));
  g.push_back(act);
  g.push_back(conv("conv5", 3, 1, 1, towers));
  g.push_back(act);
  g.push_back(max_pool(o.pool_size(), o.pool_stride(), o.ceil_mode()));
  g.push_back(GraphStep{Kind::kFlatten, ""});
  for (const auto* name : {"fc6", "fc7"}) g.push_back(linear(name)), g.push_back(act);
  g.push_back(linear("fc8"));
  return g;
}

}  // namespace alexnet::detail
