#include <alexnet/caffe.h>

#include <alexnet/checkpoint.h>
#include <alexnet/lrn.h>
#include <alexnet/pytorch.h>

#include "classes.h"
#include "graph.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <ATen/ATen.h>

#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>

namespace alexnet {
namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::internal::WireFormatLite;

// Wire types.
constexpr uint32_t kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5;

struct Blob {
  std::vector<int64_t> shape, legacy{-1, -1, -1, -1};  // shape, or (num, channels, height, width)
  std::vector<float> data;
  int64_t count() const { return static_cast<int64_t>(data.size()); }
};

struct CaffeLayer {
  std::string name, type;
  std::vector<Blob> blobs;
  // ConvolutionParameter / InnerProductParameter
  int64_t num_output = 0, group = 1, kernel = 0, stride = 1, pad = 0;
  bool bias_term = true, transpose = false, dilated = false, rectangular = false;
  // LRNParameter
  int64_t local_size = 5, norm_region = 0;
  double alpha = 1, beta = 0.75, k = 1;
  // PoolingParameter
  int64_t pool = 0, round_mode = 0;
  bool global_pooling = false;
  // ReLUParameter
  double negative_slope = 0;
};

class Reader {
 public:
  Reader(CodedInputStream& in, std::string path) : in_(in), path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error("caffemodel '" + path_ + "': " + why);
  }

  // Calls `field(number, wire_type)` for each field of the message up to the current
  // limit; a field it does not take (false) is skipped.
  void message(const std::function<bool(uint32_t, uint32_t)>& field) {
    while (uint32_t tag = in_.ReadTag()) {
      if (!field(tag >> 3, tag & 7) && !WireFormatLite::SkipField(&in_, tag)) fail("damaged (a field cannot be skipped)");
    }
    if (!in_.ConsumedEntireMessage()) fail("damaged (a message ends inside a field)");
  }

  uint32_t length() {
    uint32_t n = 0;
    if (!in_.ReadVarint32(&n)) fail("damaged (a length cannot be read)");
    const int left = in_.BytesUntilLimit();
    if (left >= 0 && n > static_cast<uint32_t>(left)) {
      fail("damaged (a field of " + std::to_string(n) + " bytes, with " + std::to_string(left) + " left)");
    }
    return n;
  }

  void nested(const std::function<bool(uint32_t, uint32_t)>& field) {
    const auto limit = in_.PushLimit(static_cast<int>(length()));
    message(field);
    in_.PopLimit(limit);
  }

  std::string string() {
    std::string s;
    if (!in_.ReadString(&s, static_cast<int>(length()))) fail("damaged (a string is cut short)");
    return s;
  }

  uint64_t varint() {
    uint64_t v = 0;
    if (!in_.ReadVarint64(&v)) fail("damaged (a number cannot be read)");
    return v;
  }

  float fixed32() {
    uint32_t bits = 0;
    if (!in_.ReadLittleEndian32(&bits)) fail("damaged (a number is cut short)");
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }

  // A scalar field of `wire` type: varint or fixed32 float.
  double number(uint32_t wire) {
    if (wire == kFixed32) return fixed32();
    if (wire != kVarint) fail("damaged (a number field of wire type " + std::to_string(wire) + ")");
    return static_cast<double>(varint());
  }

  // An integer field (uint32, int32, enum, int64): a varint, clamped to int64's range
  // (the values that matter are small; an absurd one is refused by the checks after).
  int64_t integer(uint32_t wire) {
    if (wire != kVarint) fail("damaged (an integer field of wire type " + std::to_string(wire) + ")");
    return static_cast<int64_t>(std::min<uint64_t>(varint(), uint64_t{INT64_MAX}));
  }

  // Repeated integers, packed or not; `values` gains them.
  void integers(uint32_t wire, std::vector<int64_t>& values) {
    if (wire == kVarint) return values.push_back(integer(wire));
    if (wire != kBytes) fail("damaged (an integer list of wire type " + std::to_string(wire) + ")");
    const auto limit = in_.PushLimit(static_cast<int>(length()));
    while (in_.BytesUntilLimit() > 0) values.push_back(integer(kVarint));
    in_.PopLimit(limit);
  }

  void floats(uint32_t wire, std::vector<float>& values) {
    if (wire == kFixed32) return values.push_back(fixed32());
    if (wire != kBytes) fail("damaged (a float list of wire type " + std::to_string(wire) + ")");
    const auto n = length();  // checked against what is left: allocating it is bounded by the file
    if (n % 4) fail("damaged (a float list of " + std::to_string(n) + " bytes)");
    const auto at = values.size();
    values.resize(at + n / 4);
    if (!in_.ReadRaw(values.data() + at, static_cast<int>(n))) fail("damaged (a float list is cut short)");
  }

  void doubles(uint32_t wire, std::vector<float>& values) {
    auto take = [&] {
      uint64_t bits = 0;
      if (!in_.ReadLittleEndian64(&bits)) fail("damaged (a number is cut short)");
      double d;
      std::memcpy(&d, &bits, 8);
      values.push_back(static_cast<float>(d));
    };
    if (wire == kFixed64) return take();
    if (wire != kBytes) fail("damaged (a double list of wire type " + std::to_string(wire) + ")");
    const auto limit = in_.PushLimit(static_cast<int>(length()));
    while (in_.BytesUntilLimit() > 0) take();
    in_.PopLimit(limit);
  }

  // A BlobProto's fields: (num, channels, height, width), data, shape, double_data;
  // diff and double_diff are skipped.
  bool blob_field(Blob& b, uint32_t f, uint32_t w) {
    switch (f) {
      case 1: case 2: case 3: case 4: b.legacy[f - 1] = integer(w); return true;
      case 5: floats(w, b.data); return true;
      case 8: doubles(w, b.data); return true;
      case 7: nested([&](uint32_t g, uint32_t v) { return g == 1 ? (integers(v, b.shape), true) : false; }); return true;
      default: return false;
    }
  }

  Blob blob() {
    Blob b;
    nested([&](uint32_t f, uint32_t w) { return blob_field(b, f, w); });
    return b;
  }

  void convolution(CaffeLayer& l) {
    std::vector<int64_t> pad, kernel, stride, dilation;
    int64_t h = -1, w = -1;
    nested([&](uint32_t f, uint32_t wire) {
      switch (f) {
        case 1: l.num_output = integer(wire); return true;
        case 2: l.bias_term = number(wire) != 0; return true;
        case 3: integers(wire, pad); return true;
        case 4: integers(wire, kernel); return true;
        case 5: l.group = integer(wire); return true;
        case 6: integers(wire, stride); return true;
        case 18: integers(wire, dilation); return true;
        case 9: case 10: case 11: case 12: case 13: case 14: {
          // pad_h, pad_w, kernel_h, kernel_w, stride_h, stride_w: square only
          const auto v = integer(wire);
          auto& vec = f <= 10 ? pad : f <= 12 ? kernel : stride;
          if (f % 2 == 1) h = v; else w = v;
          if (f % 2 == 0) {
            if (h != w) l.rectangular = true;
            vec.push_back(v);
          }
          return true;
        }
        default: return false;
      }
    });
    auto one = [&](const std::vector<int64_t>& v, int64_t otherwise) {
      for (auto x : v) l.rectangular = l.rectangular || x != v.front();
      return v.empty() ? otherwise : v.front();
    };
    l.pad = one(pad, 0), l.kernel = one(kernel, 0), l.stride = one(stride, 1);
    for (auto d : dilation) l.dilated = l.dilated || d != 1;
  }

  void inner_product(CaffeLayer& l) {
    nested([&](uint32_t f, uint32_t w) {
      switch (f) {
        case 1: l.num_output = integer(w); return true;
        case 2: l.bias_term = number(w) != 0; return true;
        case 6: l.transpose = number(w) != 0; return true;
        default: return false;
      }
    });
  }

  void lrn(CaffeLayer& l) {
    nested([&](uint32_t f, uint32_t w) {
      switch (f) {
        case 1: l.local_size = integer(w); return true;
        case 2: l.alpha = number(w); return true;
        case 3: l.beta = number(w); return true;
        case 4: l.norm_region = integer(w); return true;
        case 5: l.k = number(w); return true;
        default: return false;
      }
    });
  }

  void pooling(CaffeLayer& l) {
    std::vector<int64_t> unused;
    nested([&](uint32_t f, uint32_t w) {
      switch (f) {
        case 1: l.pool = integer(w); return true;
        case 2: l.kernel = integer(w); return true;
        case 3: l.stride = integer(w); return true;
        case 4: l.pad = integer(w); return true;
        case 5: case 6: case 7: case 8: case 9: case 10:  // kernel_h/w, stride_h/w, pad_h/w
          l.rectangular = true;
          number(w);
          return true;
        case 12: l.global_pooling = number(w) != 0; return true;
        case 13: l.round_mode = integer(w); return true;
        default: return false;
      }
    });
  }

  void relu(CaffeLayer& l) {
    nested([&](uint32_t f, uint32_t w) { return f == 1 ? (l.negative_slope = number(w), true) : false; });
  }

  static std::string v1_type(int64_t t) {
    switch (t) {
      case 1: return "Accuracy";
      case 4: return "Convolution";
      case 5: return "Data";
      case 6: return "Dropout";
      case 12: return "ImageData";
      case 14: return "InnerProduct";
      case 15: return "LRN";
      case 17: return "Pooling";
      case 18: return "ReLU";
      case 20: return "Softmax";
      case 21: return "SoftmaxWithLoss";
      case 29: return "MemoryData";
      case 32: return "DummyData";
      default: return "V1 layer type " + std::to_string(t);
    }
  }

  // A LayerParameter (v2) or V1LayerParameter (v1).
  CaffeLayer layer(bool v1) {
    CaffeLayer l;
    nested([&](uint32_t f, uint32_t w) {
      if (f == (v1 ? 4u : 1u) && w == kBytes) return l.name = string(), true;
      if (f == (v1 ? 5u : 2u)) return l.type = v1 ? v1_type(integer(w)) : string(), true;
      if (f == (v1 ? 6u : 7u) && w == kBytes) return l.blobs.push_back(blob()), true;
      if (w != kBytes) return false;
      if (f == (v1 ? 10u : 106u)) return convolution(l), true;
      if (f == (v1 ? 17u : 117u)) return inner_product(l), true;
      if (f == (v1 ? 18u : 118u)) return lrn(l), true;
      if (f == (v1 ? 19u : 121u)) return pooling(l), true;
      if (f == (v1 ? 30u : 123u)) return relu(l), true;
      return false;
    });
    return l;
  }

  std::vector<CaffeLayer> net() {
    std::vector<CaffeLayer> layers;
    bool v1 = false, v2 = false;
    message([&](uint32_t f, uint32_t w) {
      if (w != kBytes || (f != 2 && f != 100)) return false;
      (f == 2 ? v1 : v2) = true;
      layers.push_back(layer(f == 2));
      return true;
    });
    if (v1 && v2) fail("holds layers in both Caffe's current and V1 forms");
    if (layers.empty()) fail("holds no layers (not a Caffe NetParameter)");
    return layers;
  }

  // A whole file holding one BlobProto (Caffe's .binaryproto mean).
  Blob top_blob() {
    Blob b;
    message([&](uint32_t f, uint32_t w) { return blob_field(b, f, w); });
    return b;
  }

 private:
  CodedInputStream& in_;
  std::string path_;
};

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(what + " '" + path + "': cannot be opened");
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  if (bytes.size() >= static_cast<size_t>(INT_MAX)) throw std::runtime_error(what + " '" + path + "': over 2 GiB");
  return bytes;
}

template <typename Fn>
auto parse(const std::string& bytes, const std::string& path, Fn&& fn) {
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  in.SetTotalBytesLimit(INT_MAX);
  in.SetRecursionLimit(16);
  const auto limit = in.PushLimit(static_cast<int>(bytes.size()));
  Reader reader(in, path);
  auto out = fn(reader);
  in.PopLimit(limit);
  return out;
}

// fc8's outputs (ImageNet-21k has 21,841 classes) and conv1's padding (torchvision's
// is 2): bounds on numbers that size what is built.
constexpr int64_t kMaxClasses = 1 << 20, kMaxConv1Padding = 10;

bool structure(const std::string& type) {
  for (const char* t : {"Data", "Input", "ImageData", "MemoryData", "DummyData", "ReLU", "Dropout", "Softmax",
                        "SoftmaxWithLoss", "Accuracy"}) {
    if (type == t) return true;
  }
  return false;
}

char kind(const std::string& type) {
  if (type == "Convolution") return 'C';
  if (type == "LRN") return 'N';
  if (type == "Pooling") return 'P';
  if (type == "InnerProduct") return 'F';
  return '?';
}

std::string describe(char k) {
  switch (k) {
    case 'C': return "a Convolution";
    case 'N': return "an LRN";
    case 'P': return "a Pooling";
    case 'F': return "an InnerProduct";
    default: return "nothing";
  }
}

}  // namespace

std::pair<AlexNet, Preprocessing> read_caffe(const std::string& caffemodel, const CaffeOptions& options) {
  const auto layers = parse(read_file(caffemodel, "caffemodel"), caffemodel, [](Reader& r) { return r.net(); });
  auto fail = [&](const CaffeLayer& l, const std::string& why) -> std::runtime_error {
    return std::runtime_error("caffemodel '" + caffemodel + "': layer '" + l.name + "' (" + l.type + "): " + why);
  };
  // AlexNet's layers with weights or shape, in bvlc_alexnet's order or CaffeNet's.
  std::vector<const CaffeLayer*> net;
  std::string order;
  for (const auto& l : layers) {
    if (structure(l.type)) {
      if (l.type == "ReLU" && l.negative_slope != 0) throw fail(l, "a leaky ReLU; AlexNet's is plain");
      if (!l.blobs.empty()) throw fail(l, "a " + l.type + " layer with weights");
      continue;
    }
    if (kind(l.type) == '?') throw fail(l, "not a layer of AlexNet");
    net.push_back(&l);
    order += kind(l.type);
  }
  const std::string alexnet = "CNPCNPCCCPFFF", caffenet = "CPNCPNCCCPFFF";
  const auto& expected = order.size() > 1 && order[1] == 'P' ? caffenet : alexnet;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (i == order.size()) {
      throw std::runtime_error("caffemodel '" + caffemodel + "': ends after " + std::to_string(i) +
                               " of AlexNet's layers; the next would be " + describe(expected[i]) + " layer");
    }
    if (order[i] != expected[i]) throw fail(*net[i], "where AlexNet has " + describe(expected[i]) + " layer");
  }
  if (order.size() > expected.size()) throw fail(*net[expected.size()], "after AlexNet's fc8");

  const bool caffe_net = &expected == &caffenet;
  const CaffeLayer* conv[5];
  const CaffeLayer* fc[3];
  const CaffeLayer* lrn[2];
  const CaffeLayer* pool[3];
  for (size_t i = 0, c = 0, f = 0, n = 0, p = 0; i < net.size(); ++i) {
    switch (order[i]) {
      case 'C': conv[c++] = net[i]; break;
      case 'F': fc[f++] = net[i]; break;
      case 'N': lrn[n++] = net[i]; break;
      default: pool[p++] = net[i]; break;
    }
  }
  // (outputs, inputs, kernel, stride, pad, group) of conv1..conv5.
  const int64_t shapes[5][6] = {{96, 3, 11, 4, -1, 1}, {256, 96, 5, 1, 2, 2}, {384, 256, 3, 1, 1, 1},
                                {384, 384, 3, 1, 1, 2}, {256, 384, 3, 1, 1, 2}};
  StateDict state;
  auto take = [&](const CaffeLayer& l, const std::string& key, std::vector<int64_t> shape) {
    if (l.blobs.size() != 2) {
      throw fail(l, std::to_string(l.blobs.size()) + " blobs, expected 2 (weights and biases)" +
                        (l.bias_term ? "" : "; bias_term is false"));
    }
    int64_t count = 1;
    for (auto d : shape) count *= d;
    const auto& w = l.blobs[0];
    if (w.count() != count) {
      throw fail(l, "weights hold " + std::to_string(w.count()) + " numbers, expected " + std::to_string(count));
    }
    const auto& b = l.blobs[1];
    if (b.count() != shape[0]) {
      throw fail(l, "biases hold " + std::to_string(b.count()) + " numbers, expected " + std::to_string(shape[0]));
    }
    state.emplace_back(key + ".weight", at::from_blob(const_cast<float*>(w.data.data()), shape, at::kFloat).clone());
    state.emplace_back(key + ".bias", at::from_blob(const_cast<float*>(b.data.data()), {shape[0]}, at::kFloat).clone());
  };
  for (int i = 0; i < 5; ++i) {
    const auto& l = *conv[i];
    const auto* s = shapes[i];
    if (l.rectangular || l.dilated) throw fail(l, "a rectangular or dilated convolution");
    const bool pad_ok = s[4] >= 0 ? l.pad == s[4] : l.pad <= kMaxConv1Padding;
    if (l.num_output != s[0] || l.kernel != s[2] || l.stride != s[3] || !pad_ok || l.group != s[5]) {
      throw fail(l, std::to_string(l.num_output) + " outputs, kernel " + std::to_string(l.kernel) + ", stride " +
                        std::to_string(l.stride) + ", pad " + std::to_string(l.pad) + ", group " +
                        std::to_string(l.group) + "; AlexNet's conv" + std::to_string(i + 1) + " has " +
                        std::to_string(s[0]) + ", " + std::to_string(s[2]) + ", " + std::to_string(s[3]) + ", " +
                        (s[4] >= 0 ? std::to_string(s[4]) : "0 to " + std::to_string(kMaxConv1Padding)) + ", " +
                        std::to_string(s[5]));
    }
    take(l, "conv" + std::to_string(i + 1), {s[0], s[1] / s[5], s[2], s[2]});
  }
  // Caffe's inputs are BGR: conv1's input channels permuted, our RGB input gives its logits.
  state[0].second = state[0].second.flip(1).contiguous();

  for (const auto* l : lrn) {
    if (l->norm_region != 0) throw fail(*l, "normalises within a channel; AlexNet's LRN is across channels");
    if (l->local_size % 2 == 0 || l->local_size < 1) {
      throw fail(*l, "local_size " + std::to_string(l->local_size) + "; Caffe's window is odd");
    }
    if (l->local_size != lrn[0]->local_size || l->alpha != lrn[0]->alpha || l->beta != lrn[0]->beta || l->k != lrn[0]->k) {
      throw fail(*l, "differs from '" + lrn[0]->name + "'; AlexNet's two LRN layers are the same");
    }
  }
  for (const auto* l : pool) {
    if (l->pool != 0 || l->kernel != 3 || l->stride != 2 || l->pad != 0 || l->global_pooling || l->rectangular) {
      throw fail(*l, "AlexNet pools the maximum over 3x3 windows at stride 2, unpadded");
    }
    if (l->round_mode != pool[0]->round_mode) throw fail(*l, "rounds unlike '" + pool[0]->name + "'");
  }

  auto options_ = AlexNetOptions::caffe()
                      .input_size(options.input_size)
                      .conv1_padding(conv[0]->pad)
                      .pool_before_lrn(caffe_net)
                      .ceil_mode(pool[0]->round_mode == 0)  // CEIL = 0, FLOOR = 1
                      .lrn(LRNOptions::caffe().size(lrn[0]->local_size).alpha(lrn[0]->alpha).beta(lrn[0]->beta).k(lrn[0]->k))
                      .num_classes(fc[2]->num_output);
  const auto side = detail::pool5_side(options_);
  const int64_t fc_shapes[3][2] = {{4096, 256 * side * side}, {4096, 4096}, {fc[2]->num_output, 4096}};
  for (int i = 0; i < 3; ++i) {
    const auto& l = *fc[i];
    if (l.num_output != fc_shapes[i][0] || (i == 2 && (l.num_output < 2 || l.num_output > kMaxClasses))) {
      throw fail(l, std::to_string(l.num_output) + " outputs; AlexNet's fc" + std::to_string(i + 6) + " has " +
                        (i == 2 ? "one per class (2 to " + std::to_string(kMaxClasses) + ")" : std::string("4096")));
    }
    if (i == 0 && !l.blobs.empty() && l.blobs[0].count() != fc_shapes[0][0] * fc_shapes[0][1]) {
      throw fail(l, "takes " + std::to_string(l.blobs[0].count() / 4096) + " inputs, but pool5 gives 256 x " +
                        std::to_string(side) + " x " + std::to_string(side) + " at input size " +
                        std::to_string(options.input_size) + " (Caffe's crop_size: give it)");
    }
    const auto key = "fc" + std::to_string(i + 6);
    if (l.transpose) {
      take(l, key, {fc_shapes[i][1], fc_shapes[i][0]});
      state[state.size() - 2].second = state[state.size() - 2].second.t().contiguous();
    } else {
      take(l, key, {fc_shapes[i][0], fc_shapes[i][1]});
    }
  }

  AlexNet model(options_);
  load_state_dict(*model, state, caffemodel);
  model->eval();

  auto classes = detail::class_names(options.classes, options_.num_classes(), caffemodel);
  Preprocessing pre;
  if (options.mean.empty()) {
    pre.classes = std::move(classes);
    pre.mean = Mean::kChannels;
    pre.mean_rgb = at::tensor({122.68, 116.67, 104.01}, at::kDouble);  // Caffe's ImageNet mean, averaged, as RGB
    pre.resize = 256;
    pre.crop = options.input_size;
  } else {
    const auto mean = parse(read_file(options.mean, "mean"), options.mean, [](Reader& r) { return r.top_blob(); });
    std::vector<int64_t> shape = mean.shape;
    if (shape.empty()) {
      for (auto d : mean.legacy) if (d >= 0) shape.push_back(d);
    }
    while (shape.size() > 3 && shape.front() == 1) shape.erase(shape.begin());
    int64_t count = 1;
    for (auto d : shape) count *= d;
    if (shape.size() != 3 || shape[0] != 3 || shape[1] != shape[2] || shape[1] < options.input_size ||
        count != mean.count()) {
      throw std::runtime_error("mean '" + options.mean + "': expected a [1, 3, S, S] BGR image with S at least " +
                               std::to_string(options.input_size) + " and S x S x 3 numbers");
    }
    const auto bgr = at::from_blob(const_cast<float*>(mean.data.data()), shape, at::kFloat);
    const auto rgb = bgr.flip(0).to(at::kDouble);
    pre = Preprocessing::from_statistics(std::move(classes), Mean::kImage, rgb, rgb.mean({1, 2}), shape[1],
                                         options.input_size);
  }
  return {model, pre};
}

AlexNet convert_caffe(const std::string& caffemodel, const std::string& checkpoint, const CaffeOptions& options) {
  auto [model, pre] = read_caffe(caffemodel, options);
  CheckpointExtras extras;
  pre.add_to(extras);
  save(*model, checkpoint, extras);
  return model;
}

}  // namespace alexnet
