#include <alexnet/interop/caffe.h>

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/lrn.h>
#include <alexnet/network/pytorch.h>

#include "network/classes.h"
#include "network/graph.h"

#include "interop/caffe.pb.h"

#include <ATen/ATen.h>

#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>

namespace alexnet {
namespace {

namespace pb = alexnet::caffe;

// A blob's numbers (float, or double read as float) and its shape: BlobShape's dims, or
// the (num, channels, height, width) of files before it, as given.
struct Blob {
  std::vector<int64_t> shape;
  const float* data = nullptr;
  int64_t size = 0;
  std::vector<float> converted;  // double_data, as float
  int64_t count() const { return size; }
};

// What a layer says, in one form for both of Caffe's layer messages.
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

Blob blob_of(const pb::BlobProto& b) {
  Blob out;
  if (b.has_shape()) {
    out.shape.assign(b.shape().dim().begin(), b.shape().dim().end());
  } else {
    if (b.has_num()) out.shape.push_back(b.num());
    if (b.has_channels()) out.shape.push_back(b.channels());
    if (b.has_height()) out.shape.push_back(b.height());
    if (b.has_width()) out.shape.push_back(b.width());
  }
  if (b.data_size() > 0 || b.double_data_size() == 0) {
    out.data = b.data().data();
    out.size = b.data_size();
  } else {
    out.converted.assign(b.double_data().begin(), b.double_data().end());
    out.data = out.converted.data();
    out.size = static_cast<int64_t>(out.converted.size());
  }
  return out;
}

// One of a square's sides given alone (kernel_h, kernel_w) or as a list (kernel_size):
// the side, and whether the shape is not a square.
struct Side {
  int64_t value;
  bool rectangular;
};
template <typename List>
Side side(const List& list, bool has_h, uint32_t h, bool has_w, uint32_t w, int64_t otherwise) {
  if (has_h || has_w) return {has_h ? h : w, !(has_h && has_w) || h != w || !list.empty()};
  bool rectangular = false;
  for (const auto v : list) rectangular = rectangular || v != *list.begin();
  return {list.empty() ? otherwise : static_cast<int64_t>(*list.begin()), rectangular};
}

void read_params(CaffeLayer& l, const pb::ConvolutionParameter* conv, const pb::InnerProductParameter* ip,
                 const pb::LRNParameter* lrn, const pb::PoolingParameter* pool, const pb::ReLUParameter* relu) {
  if (conv) {
    l.num_output = conv->num_output();
    l.bias_term = conv->bias_term();
    l.group = conv->group();
    // Caffe: kernel_h/kernel_w (and pad_h/pad_w, stride_h/stride_w) instead of the list.
    const auto kernel = side(conv->kernel_size(), conv->has_kernel_h(), conv->kernel_h(), conv->has_kernel_w(),
                             conv->kernel_w(), 0);
    const auto stride = side(conv->stride(), conv->has_stride_h(), conv->stride_h(), conv->has_stride_w(),
                             conv->stride_w(), 1);
    const auto pad = side(conv->pad(), conv->has_pad_h(), conv->pad_h(), conv->has_pad_w(), conv->pad_w(), 0);
    l.kernel = kernel.value, l.stride = stride.value, l.pad = pad.value;
    l.rectangular = kernel.rectangular || stride.rectangular || pad.rectangular;
    for (const auto d : conv->dilation()) l.dilated = l.dilated || d != 1;
  }
  if (ip) {
    l.num_output = ip->num_output();
    l.bias_term = ip->bias_term();
    l.transpose = ip->transpose();
  }
  if (lrn) {
    l.local_size = lrn->local_size();
    l.alpha = lrn->alpha();
    l.beta = lrn->beta();
    l.norm_region = lrn->norm_region();
    l.k = lrn->k();
  }
  if (pool) {
    // Caffe's rule as convolution's: kernel_size, or kernel_h and kernel_w (likewise
    // pad and stride); a side given twice must be one number to be a square.
    auto one = [](bool has, uint32_t v) {
      google::protobuf::RepeatedField<uint32_t> list;
      if (has) list.Add(v);
      return list;
    };
    const auto kernel = side(one(pool->has_kernel_size(), pool->kernel_size()), pool->has_kernel_h(),
                             pool->kernel_h(), pool->has_kernel_w(), pool->kernel_w(), 0);
    const auto stride = side(one(pool->has_stride(), pool->stride()), pool->has_stride_h(), pool->stride_h(),
                             pool->has_stride_w(), pool->stride_w(), pool->stride());
    const auto pad = side(one(pool->has_pad(), pool->pad()), pool->has_pad_h(), pool->pad_h(), pool->has_pad_w(),
                          pool->pad_w(), pool->pad());
    l.pool = pool->pool();
    l.kernel = kernel.value, l.stride = stride.value, l.pad = pad.value;
    l.rectangular = kernel.rectangular || stride.rectangular || pad.rectangular;
    l.global_pooling = pool->global_pooling();
    l.round_mode = pool->round_mode();
  }
  if (relu) l.negative_slope = relu->negative_slope();
}

std::string v1_type(uint32_t t) {
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

template <typename Message>
const Message* if_has(bool has, const Message& m) {
  return has ? &m : nullptr;
}

// Every layer of a NetParameter, in order, in either of Caffe's forms.
std::vector<CaffeLayer> layers_of(const pb::NetParameter& net, const std::string& path) {
  if (net.layer_size() > 0 && net.layers_size() > 0) {
    throw std::runtime_error("caffemodel '" + path + "': holds layers in both Caffe's current and V1 forms");
  }
  std::vector<CaffeLayer> out;
  for (const auto& p : net.layer()) {
    CaffeLayer l;
    l.name = p.name();
    l.type = p.type();
    for (const auto& b : p.blobs()) l.blobs.push_back(blob_of(b));
    read_params(l, if_has(p.has_convolution_param(), p.convolution_param()),
                if_has(p.has_inner_product_param(), p.inner_product_param()), if_has(p.has_lrn_param(), p.lrn_param()),
                if_has(p.has_pooling_param(), p.pooling_param()), if_has(p.has_relu_param(), p.relu_param()));
    out.push_back(std::move(l));
  }
  for (const auto& p : net.layers()) {
    CaffeLayer l;
    l.name = p.name();
    l.type = v1_type(p.type());
    for (const auto& b : p.blobs()) l.blobs.push_back(blob_of(b));
    read_params(l, if_has(p.has_convolution_param(), p.convolution_param()),
                if_has(p.has_inner_product_param(), p.inner_product_param()), if_has(p.has_lrn_param(), p.lrn_param()),
                if_has(p.has_pooling_param(), p.pooling_param()), if_has(p.has_relu_param(), p.relu_param()));
    out.push_back(std::move(l));
  }
  if (out.empty()) throw std::runtime_error("caffemodel '" + path + "': holds no layers (not a Caffe NetParameter)");
  return out;
}

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(what + " '" + path + "': cannot be opened");
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  if (bytes.size() >= static_cast<size_t>(INT_MAX)) throw std::runtime_error(what + " '" + path + "': over 2 GiB");
  return bytes;
}

// `message` from the file at `path`: protobuf's parser checks every length against
// what remains of the input before it allocates.
template <typename Message>
void parse_file(Message& message, const std::string& path, const std::string& what) {
  const auto bytes = read_file(path, what);
  if (!message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    throw std::runtime_error(what + " '" + path + "': damaged or not Caffe's (protobuf cannot parse it)");
  }
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
  pb::NetParameter message;
  parse_file(message, caffemodel, "caffemodel");
  const auto layers = layers_of(message, caffemodel);
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
    state.emplace_back(key + ".weight", at::from_blob(const_cast<float*>(w.data), shape, at::kFloat).clone());
    state.emplace_back(key + ".bias", at::from_blob(const_cast<float*>(b.data), {shape[0]}, at::kFloat).clone());
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
    pb::BlobProto proto;
    parse_file(proto, options.mean, "mean");
    const auto mean = blob_of(proto);
    std::vector<int64_t> shape = mean.shape;
    while (shape.size() > 3 && shape.front() == 1) shape.erase(shape.begin());
    // Each side bounded before any product of them is taken.
    const bool fits = shape.size() == 3 && shape[0] == 3 && shape[1] == shape[2] && shape[1] >= options.input_size &&
                      shape[1] <= (1 << 16) && 3 * shape[1] * shape[2] == mean.count();
    if (!fits) {
      throw std::runtime_error("mean '" + options.mean + "': expected a [1, 3, S, S] BGR image with S at least " +
                               std::to_string(options.input_size) + " and S x S x 3 numbers");
    }
    const auto bgr = at::from_blob(const_cast<float*>(mean.data), shape, at::kFloat);
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
