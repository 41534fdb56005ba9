// Our networks in other systems and theirs in ours, against implementations we did not
// write: OpenCV's DNN module (C++ here, Python in tests/pytorch_reference.py) runs our
// ONNX and a Caffe model this file writes; python3-onnx's checker validates every ONNX
// file; Python's torch.jit.load and LibTorch's torch::jit::load run our TorchScript.

#include "helpers.h"

#include <alexnet/interop/caffe.h>
#include <alexnet/network/checkpoint.h>
#include <alexnet/interop/onnx.h>
#include <alexnet/network/pytorch.h>
#include <alexnet/network/torchscript.h>

#include <catch2/catch.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/csrc/jit/serialization/import.h>

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

using namespace alexnet;
using alexnet::test::message_of;
using alexnet::test::relative_error;

namespace {

using test::python_has;
void python(const std::string& args) { test::python_reference(args); }

struct Case {
  std::string name;
  AlexNetOptions options;
};

// The two-tower presets at 103: conv1's maps are 24x24, where pooling that rounds up
// (Caffe's) gives 12, 6, 3 and rounding down 11, 5, 2, so every consumer's pooling
// convention is tested; fc6 is small, so the tests are quick. torchvision's at 224,
// where its adaptive pooling is the identity.
std::vector<Case> presets() {
  return {{"paper", AlexNetOptions::paper().input_size(103).num_classes(10)},
          {"caffe", AlexNetOptions::caffe().input_size(103).num_classes(10)},
          {"caffenet", AlexNetOptions::caffe().input_size(103).num_classes(10).pool_before_lrn(true)},
          {"torchvision", AlexNetOptions::torchvision().num_classes(10)}};
}

// The paper's alternatives (Sections 3.1-3.4) at the same size, each exported as the
// presets are: the non-linearity, the pooling, one tower, no LRN.
std::vector<Case> alternatives() {
  const auto base = AlexNetOptions::paper().input_size(103).num_classes(10);
  return {{"tanh", AlexNetOptions(base).activation(Activation::kTanh)},
          {"pool-2-2", AlexNetOptions(base).pool_size(2).pool_stride(2)},
          {"one-tower", AlexNetOptions(base).architecture(Architecture::kOneTower)},
          {"no-lrn", AlexNetOptions(base).lrn(c10::nullopt)}};
}

std::vector<Case> every_network() {
  auto all = presets();
  for (auto& c : alternatives()) all.push_back(c);
  return all;
}

// A random network in inference mode, its preprocessing (the paper's with a mean
// image) and an input with the spread of real mean-subtracted pixels.
struct Net {
  AlexNet model;
  Preprocessing pre;
  at::Tensor input, logits;
};

Net make(const AlexNetOptions& options, uint64_t seed) {
  torch::manual_seed(seed);
  AlexNet model(AlexNetOptions(options).init(Init::kCaffe));
  model->eval();
  std::vector<std::string> classes;
  for (int i = 0; i < options.num_classes(); ++i) classes.push_back("class \"" + std::to_string(i) + "\"");
  const auto side = options.input_size();
  auto pre = Preprocessing::from_statistics(classes, Mean::kImage, at::rand({3, 256, 256}, at::kDouble) * 255,
                                            at::full({3}, 120.0, at::kDouble), 256, side);
  const auto x = at::randn({2, 3, side, side}) * 50;
  torch::NoGradGuard no_grad;
  return {model, pre, x, model->forward(x)};
}

cv::Mat blob(const at::Tensor& x) {
  const auto c = x.contiguous();
  cv::Mat m({static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), static_cast<int>(c.size(2)),
             static_cast<int>(c.size(3))},
            CV_32F);
  std::memcpy(m.data, c.data_ptr<float>(), static_cast<size_t>(c.nbytes()));
  return m;
}

at::Tensor tensor(const cv::Mat& m) {
  std::vector<int64_t> sizes(m.size.p, m.size.p + m.dims);
  return at::from_blob(m.data, sizes, at::kFloat).clone();
}

// ---- A Caffe model written here, as Caffe's tools write one (protobuf wire format) ----

struct Proto {
  std::string bytes;
  void varint(uint64_t v) {
    do {
      bytes += static_cast<char>((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
      v >>= 7;
    } while (v);
  }
  Proto& number(uint32_t field, uint64_t v) {
    varint(field << 3);
    varint(v);
    return *this;
  }
  Proto& real(uint32_t field, float v) {
    varint(field << 3 | 5);
    bytes.append(reinterpret_cast<const char*>(&v), 4);
    return *this;
  }
  Proto& text(uint32_t field, const std::string& s) {
    varint(field << 3 | 2);
    varint(s.size());
    bytes += s;
    return *this;
  }
  Proto& message(uint32_t field, const Proto& m) { return text(field, m.bytes); }
  Proto& floats(uint32_t field, const at::Tensor& t) {
    const auto c = t.contiguous().to(at::kFloat);
    return text(field, std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes())));
  }
};

// A BlobProto with `shape` (field 7) and packed data (field 5).
Proto blob_proto(const at::Tensor& t) {
  Proto shape;
  for (auto d : t.sizes()) shape.number(1, static_cast<uint64_t>(d));
  Proto b;
  b.message(7, shape);
  b.floats(5, t);
  return b;
}

// One layer both as prototxt (for OpenCV) and as its binary message (v2 or V1).
struct CaffeWriter {
  bool v1 = false;
  // Sides given apart (kernel_h and kernel_w, stride_h and stride_w) instead of
  // kernel_size and stride; pool_w: pooling's kernel_w (0: as kernel_h).
  bool sides = false;
  int64_t pool_w = 0;
  Proto net;
  std::ostringstream prototxt;
  std::string top = "data";

  CaffeWriter(bool v1_, int64_t side) : v1(v1_) {
    net.text(1, "alexnet");
    prototxt << "name: \"alexnet\"\ninput: \"data\"\ninput_shape { dim: 1 dim: 3 dim: " << side << " dim: " << side
             << " }\n";
  }
  void layer(const std::string& name, const std::string& type, int v1_type, const std::string& params_text,
             uint32_t params_field, uint32_t params_field_v1, const Proto& params,
             std::vector<at::Tensor> blobs = {}, std::vector<std::string> bottoms = {}, std::vector<std::string> tops = {}) {
    if (bottoms.empty()) bottoms = {top};
    if (tops.empty()) tops = {name};
    prototxt << "layer { name: \"" << name << "\" type: \"" << type << "\"";
    for (const auto& b : bottoms) prototxt << " bottom: \"" << b << "\"";
    for (const auto& t : tops) prototxt << " top: \"" << t << "\"";
    prototxt << " " << params_text << " }\n";
    Proto l;
    if (v1) {
      l.text(4, name).number(5, static_cast<uint64_t>(v1_type));
      for (const auto& b : bottoms) l.text(2, b);
      for (const auto& t : tops) l.text(3, t);
      for (const auto& b : blobs) l.message(6, blob_proto(b));
      if (params_field_v1) l.message(params_field_v1, params);
      net.message(2, l);
    } else {
      l.text(1, name).text(2, type);
      for (const auto& b : bottoms) l.text(3, b);
      for (const auto& t : tops) l.text(4, t);
      for (const auto& b : blobs) l.message(7, blob_proto(b));
      if (params_field) l.message(params_field, params);
      net.message(100, l);
    }
    top = tops.back();
  }
  void conv(const std::string& name, const at::Tensor& w, const at::Tensor& b, int64_t stride, int64_t pad,
            int64_t group) {
    std::ostringstream p;
    p << "convolution_param { num_output: " << w.size(0) << " kernel_size: " << w.size(2) << " stride: " << stride
      << " pad: " << pad << " group: " << group << " }";
    Proto m;
    m.number(1, static_cast<uint64_t>(w.size(0)));
    if (sides) {
      m.number(11, static_cast<uint64_t>(w.size(2))).number(12, static_cast<uint64_t>(w.size(3)));
    } else {
      m.number(4, static_cast<uint64_t>(w.size(2)));
    }
    m.number(6, static_cast<uint64_t>(stride)).number(3, static_cast<uint64_t>(pad)).number(5, static_cast<uint64_t>(group));
    layer(name, "Convolution", 4, p.str(), 106, 10, m, {w, b});
    relu("relu_" + name);
  }
  void relu(const std::string& name) {
    const auto t = top;
    layer(name, "ReLU", 18, "", 0, 0, {}, {}, {t}, {t});
  }
  void lrn(const std::string& name, const LRNOptions& o, int64_t towers, int64_t channels) {
    std::ostringstream p;
    const double alpha = o.mode() == LRNMode::kSum ? o.alpha() * static_cast<double>(o.size()) : o.alpha();
    p.precision(17);
    p << "lrn_param { local_size: " << o.size() << " alpha: " << alpha << " beta: " << o.beta() << " k: " << o.k()
      << " }";
    Proto m;
    m.number(1, static_cast<uint64_t>(o.size())).real(2, static_cast<float>(alpha)).real(3, static_cast<float>(o.beta()));
    m.real(5, static_cast<float>(o.k()));
    if (towers == 1) return layer(name, "LRN", 15, p.str(), 118, 18, m);
    // The paper's towers: Slice, an LRN each, Concat (prototxt only; our reader refuses them).
    const auto in = top;
    layer(name + "_slice", "Slice", 33, "slice_param { axis: 1 slice_point: " + std::to_string(channels / 2) + " }",
          126, 31, Proto{}, {}, {in}, {name + "_a", name + "_b"});
    layer(name + "_0", "LRN", 15, p.str(), 118, 18, m, {}, {name + "_a"});
    layer(name + "_1", "LRN", 15, p.str(), 118, 18, m, {}, {name + "_b"});
    layer(name, "Concat", 3, "concat_param { axis: 1 }", 0, 0, {}, {}, {name + "_0", name + "_1"});
  }
  // Caffe rounds up; OpenCV's prototxt says otherwise with its own `ceil_mode: false`
  // (BVLC's field 13 is round_mode, whose 1 means FLOOR: written in the text only).
  void pool(const std::string& name, bool ceil) {
    Proto m;
    if (sides) {
      m.number(1, 0).number(5, 3).number(6, static_cast<uint64_t>(pool_w ? pool_w : 3)).number(7, 2).number(8, 2);
    } else {
      m.number(1, 0).number(2, 3).number(3, 2);
    }
    layer(name, "Pooling", 17,
          std::string("pooling_param { pool: MAX kernel_size: 3 stride: 2") + (ceil ? "" : " ceil_mode: false") + " }", 121,
          19, m);
  }
  void fc(const std::string& name, const at::Tensor& w, const at::Tensor& b, bool relu_after) {
    Proto m;
    m.number(1, static_cast<uint64_t>(w.size(0)));
    layer(name, "InnerProduct", 14, "inner_product_param { num_output: " + std::to_string(w.size(0)) + " }", 117, 17,
          m, {w, b});
    if (relu_after) relu("relu_" + name);
  }
};

// The network as Caffe holds it: conv1 takes BGR. Paper towers as Slice/LRN/Concat.
// `like`, when given, lends its way of writing sides.
CaffeWriter to_caffe(const AlexNetImpl& model, bool v1, const CaffeWriter* like = nullptr) {
  const auto& o = model.options;
  std::map<std::string, at::Tensor> p;
  for (const auto& [k, v] : to_state_dict(model)) p[k] = v.detach();
  CaffeWriter w(v1, o.input_size());
  if (like) w.sides = like->sides, w.pool_w = like->pool_w;
  if (o.architecture() == Architecture::kTorchvision) {
    w.conv("conv1", p["features.0.weight"].flip(1), p["features.0.bias"], 4, o.conv1_padding(), 1);
    w.pool("pool1", false);
    w.conv("conv2", p["features.3.weight"], p["features.3.bias"], 1, 2, 1);
    w.pool("pool2", false);
    w.conv("conv3", p["features.6.weight"], p["features.6.bias"], 1, 1, 1);
    w.conv("conv4", p["features.8.weight"], p["features.8.bias"], 1, 1, 1);
    w.conv("conv5", p["features.10.weight"], p["features.10.bias"], 1, 1, 1);
    w.pool("pool5", false);  // 6x6 at 224: torchvision's adaptive pooling is the identity there
    w.fc("fc6", p["classifier.1.weight"], p["classifier.1.bias"], true);
    w.fc("fc7", p["classifier.4.weight"], p["classifier.4.bias"], true);
    w.fc("fc8", p["classifier.6.weight"], p["classifier.6.bias"], false);
    return w;
  }
  const int64_t towers = o.lrn_across_towers() ? 1 : 2;
  auto normalise_pool = [&](int i, int64_t channels) {
    const auto n = std::to_string(i);
    if (!o.pool_before_lrn()) w.lrn("norm" + n, *o.lrn(), towers, channels);
    w.pool("pool" + n, o.ceil_mode());
    if (o.pool_before_lrn()) w.lrn("norm" + n, *o.lrn(), towers, channels);
  };
  w.conv("conv1", p["conv1.weight"].flip(1), p["conv1.bias"], 4, o.conv1_padding(), 1);
  normalise_pool(1, 96);
  w.conv("conv2", p["conv2.weight"], p["conv2.bias"], 1, 2, 2);
  normalise_pool(2, 256);
  w.conv("conv3", p["conv3.weight"], p["conv3.bias"], 1, 1, 1);
  w.conv("conv4", p["conv4.weight"], p["conv4.bias"], 1, 1, 2);
  w.conv("conv5", p["conv5.weight"], p["conv5.bias"], 1, 1, 2);
  w.pool("pool5", o.ceil_mode());
  w.fc("fc6", p["fc6.weight"], p["fc6.bias"], true);
  w.fc("fc7", p["fc7.weight"], p["fc7.bias"], true);
  w.fc("fc8", p["fc8.weight"], p["fc8.bias"], false);
  return w;
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

TEST_CASE("ONNX export: OpenCV's DNN runs it with our logits, ONNX's checker accepts it", "[interop][onnx]") {
  const auto dir = test::temp_dir("onnx");
  const bool have_python = python_has("onnx, cv2, torch");
  uint64_t seed = 1;
  for (const auto& [name, options] : every_network()) {
    INFO(name);
    auto net = make(options, seed++);
    const auto path = dir + "/" + name + ".onnx";
    save_onnx(*net.model, net.pre, path);
    auto dnn = cv::dnn::readNetFromONNX(path);
    dnn.setInput(blob(net.input));
    const auto e = relative_error(tensor(dnn.forward()), net.logits);
    WARN(name << ": OpenCV " << CV_VERSION << " (C++) running our ONNX: logits relative error " << e);
    CHECK(e < 1e-5);
    // A batch of one through the same file: the batch dimension is not fixed.
    dnn.setInput(blob(net.input.narrow(0, 1, 1)));
    CHECK(relative_error(tensor(dnn.forward()), net.logits.narrow(0, 1, 1)) < 1e-5);
    if (have_python) {
      write_state_dict({{"input", net.input}, {"logits", net.logits}}, dir + "/" + name + "-io.pth");
      const auto lrn = !options.lrn()                                                          ? "one"
                       : options.lrn_across_towers() || options.architecture() == Architecture::kOneTower ? "across"
                                                                                                        : "towers";
      python("check-onnx " + path + " " + dir + "/" + name + "-io.pth " + lrn);
    }
  }
}

TEST_CASE("ONNX and TorchScript export refuse what they cannot write, naming it", "[interop][onnx]") {
  const auto dir = test::temp_dir("onnx-refused");
  AlexNet even(AlexNetOptions::paper().lrn(LRNOptions::paper().size(4)).num_classes(3));
  const auto pre = make(AlexNetOptions::paper().num_classes(3), 1).pre;
  CHECK(message_of([&] { save_onnx(*even, pre, dir + "/even.onnx"); }) ==
        "LRN window 4 is even: ONNX and Caffe centre an even window differently; only odd windows export");
  CHECK(message_of([&] { save_torchscript(*even, pre, dir + "/even.ts"); }) ==
        "LRN window 4 is even: ONNX and Caffe centre an even window differently; only odd windows export");
  AlexNet odd(AlexNetOptions::torchvision().input_size(256).num_classes(3));
  CHECK_THAT(message_of([&] { save_onnx(*odd, pre, dir + "/odd.onnx"); }),
             Catch::StartsWith("torchvision's adaptive pooling from 7x7 maps (input 256)"));
  CHECK(!std::ifstream(dir + "/even.onnx"));
  CHECK(!std::ifstream(dir + "/odd.onnx"));
}

TEST_CASE("TorchScript export: torch::jit::load and Python's torch.jit.load give our logits", "[interop][torchscript]") {
  const auto dir = test::temp_dir("torchscript");
  const bool have_python = python_has("torch");
  uint64_t seed = 11;
  for (const auto& [name, options] : every_network()) {
    INFO(name);
    auto net = make(options, seed++);
    const auto path = dir + "/" + name + ".ts";
    save_torchscript(*net.model, net.pre, path);
    torch::jit::ExtraFilesMap extra{{"alexnet.json", ""}};
    auto module = torch::jit::load(path, c10::nullopt, extra);
    torch::NoGradGuard no_grad;
    const auto logits = module.forward({net.input}).toTensor();
    const auto e = relative_error(logits, net.logits);
    WARN(name << ": torch::jit::load: logits relative error " << e);
    CHECK(e < 1e-6);
    CHECK_THAT(extra["alexnet.json"], Catch::Contains("\"crop\":" + std::to_string(options.input_size())));
    CHECK(module.attr("mean_image").toTensor().equal(net.pre.mean_image));
    if (have_python) {
      write_state_dict({{"input", net.input}, {"logits", net.logits}}, dir + "/" + name + "-io.pth");
      python("check-torchscript " + path + " " + dir + "/" + name + "-io.pth");
    }
  }
}

TEST_CASE("scripts/alexnet_pytorch.py exports to ONNX as Split and LRN nodes that OpenCV runs", "[interop][onnx]") {
  if (!python_has("onnx, cv2, torch")) return;
  const auto dir = test::temp_dir("pytorch-onnx");
  python("check-pytorch-onnx " + dir + " paper");
  python("check-pytorch-onnx " + dir + " caffe");
}

TEST_CASE("Caffe: OpenCV's readNetFromCaffe runs the model we write with our logits, and we read it back exactly",
          "[interop][caffe]") {
  const auto dir = test::temp_dir("caffe");
  uint64_t seed = 21;
  for (const auto& [name, options] : presets()) {
    for (bool v1 : {false, true}) {
      if (v1 && name == "torchvision") continue;  // refused like its current form; the largest model
      INFO(name << (v1 ? " (V1 layers)" : ""));
      auto net = make(options, seed++);
      auto caffe = to_caffe(*net.model, v1);
      const auto model_path = dir + "/" + name + (v1 ? "-v1" : "") + ".caffemodel";
      write(model_path, caffe.net.bytes);
      if (!v1) {  // OpenCV reads the current form; our reader reads both
        write(dir + "/" + name + ".prototxt", caffe.prototxt.str());
        auto dnn = cv::dnn::readNetFromCaffe(dir + "/" + name + ".prototxt", model_path);
        dnn.setInput(blob(net.input.flip(1)));  // Caffe's input is BGR
        auto reference = net.logits;
        if (options.lrn() && options.lrn()->k() != 1) {
          // OpenCV 4.6's Caffe importer drops lrn_param.k (its LRN adds 1, whatever the file
          // says; its ONNX importer reads LRN's bias): against our network with k = 1.
          AlexNet k1(AlexNetOptions(options).lrn(LRNOptions(*options.lrn()).k(1)));
          load_state_dict(*k1, to_state_dict(*net.model), "the same weights");
          k1->eval();
          torch::NoGradGuard no_grad;
          reference = k1->forward(net.input);
        }
        const auto e = relative_error(tensor(dnn.forward()), reference);
        WARN(name << ": OpenCV " << CV_VERSION << " readNetFromCaffe: logits relative error " << e
                  << (options.lrn() && options.lrn()->k() != 1 ? " (k = 1: OpenCV ignores Caffe's LRN k)" : ""));
        CHECK(e < 1e-5);
      }
      if (name == "caffe" || name == "caffenet") {
        CaffeOptions o;
        o.classes = net.pre.classes;
        o.input_size = options.input_size();
        auto [read, pre] = read_caffe(model_path, o);
        CHECK(read->options.pool_before_lrn() == (name == "caffenet"));
        CHECK(read->options.lrn_across_towers());
        CHECK(read->options.ceil_mode());
        torch::NoGradGuard no_grad;
        const auto back = relative_error(read->forward(net.input), net.logits);
        WARN(name << (v1 ? " (V1)" : "") << ": read_caffe back: logits relative error " << back);
        CHECK(back < 1e-6);
        CHECK(pre.classes == net.pre.classes);
        CHECK(pre.mean == Mean::kChannels);
      } else {
        // The paper's towers are Slice/Concat in Caffe; torchvision's conv1 has 64 kernels: not bvlc_alexnet.
        const auto m = message_of([&] { read_caffe(model_path); });
        CHECK_THAT(m, Catch::StartsWith("caffemodel '" + model_path + "': layer '"));
        WARN(name << ": " << m);
      }
    }
  }
}

TEST_CASE("Caffe: the mean image and class names travel into the checkpoint", "[interop][caffe]") {
  const auto dir = test::temp_dir("caffe-mean");
  auto net = make(AlexNetOptions::caffe().num_classes(10), 31);
  write(dir + "/net.caffemodel", to_caffe(*net.model, false).net.bytes);
  const auto bgr = at::rand({1, 3, 256, 256}) * 255;
  write(dir + "/mean.binaryproto", blob_proto(bgr).bytes);
  CaffeOptions o;
  o.mean = dir + "/mean.binaryproto";
  convert_caffe(dir + "/net.caffemodel", dir + "/net.pt", o);
  auto [model, pre] = load_for_inference(dir + "/net.pt");
  model->eval();
  CHECK(pre.mean == Mean::kImage);
  CHECK(pre.mean_image.equal(bgr[0].flip(0)));  // RGB
  CHECK(pre.crop == 227);
  CHECK(pre.classes.size() == 10);
  torch::NoGradGuard no_grad;
  CHECK(relative_error(model->forward(net.input), net.logits) < 1e-6);
  o.classes = {"a", "b"};
  CHECK(message_of([&] { convert_caffe(dir + "/net.caffemodel", dir + "/two.pt", o); }) ==
        "2 class names for the 10 outputs of '" + dir + "/net.caffemodel'");
  CHECK(!std::ifstream(dir + "/two.pt"));
}

TEST_CASE("Caffe: other networks and damaged files are refused with one line", "[interop][caffe]") {
  const auto dir = test::temp_dir("caffe-bad");
  auto net = make(AlexNetOptions::caffe().num_classes(10), 41);
  const auto good = to_caffe(*net.model, false).net.bytes;
  auto refuse = [&](const std::string& bytes) {
    write(dir + "/bad.caffemodel", bytes);
    return message_of([&] { read_caffe(dir + "/bad.caffemodel"); });
  };
  const auto prefix = "caffemodel '" + dir + "/bad.caffemodel': ";
  // A layer AlexNet does not have, appended after fc8.
  Proto extra;
  extra.text(1, "sig").text(2, "Sigmoid");
  Proto with_sigmoid;
  with_sigmoid.bytes = good;
  with_sigmoid.message(100, extra);
  CHECK(refuse(with_sigmoid.bytes) == prefix + "layer 'sig' (Sigmoid): not a layer of AlexNet");
  // Cut anywhere: damaged, never a crash or a huge allocation.
  for (size_t cut : {good.size() / 2, good.size() - 3, size_t{7}}) {
    CHECK_THAT(refuse(good.substr(0, cut)), Catch::StartsWith(prefix));
  }
  // A length that claims 4 GB.
  Proto huge;
  huge.varint(100 << 3 | 2);
  huge.varint(0xFFFFFFF0);
  CHECK(refuse(huge.bytes) == prefix + "damaged or not Caffe's (protobuf cannot parse it)");
  CHECK(refuse("") == prefix + "holds no layers (not a Caffe NetParameter)");
  // Sides given apart: equal ones are a square (Caffe's rule, for convolution and
  // pooling alike), unequal ones are not AlexNet's.
  CaffeWriter apart(false, 227);
  apart.sides = true;
  apart = to_caffe(*net.model, false, &apart);
  write(dir + "/apart.caffemodel", apart.net.bytes);
  write(dir + "/plain.caffemodel", good);
  CHECK(test::same(test::snapshot(*read_caffe(dir + "/apart.caffemodel").first),
                   test::snapshot(*read_caffe(dir + "/plain.caffemodel").first)));
  CaffeWriter wide(false, 227);
  wide.sides = true;
  wide.pool_w = 2;
  wide = to_caffe(*net.model, false, &wide);
  CHECK(refuse(wide.net.bytes) ==
        prefix + "layer 'pool1' (Pooling): AlexNet pools the maximum over 3x3 windows at stride 2, unpadded");
  CHECK(message_of([&] { read_caffe(dir + "/missing.caffemodel"); }) ==
        "caffemodel '" + dir + "/missing.caffemodel': cannot be opened");
  // A wrong input size for the weights: fc6 names the crop size to give.
  CaffeOptions small;
  small.input_size = 195;
  write(dir + "/good.caffemodel", good);
  CHECK_THAT(message_of([&] { read_caffe(dir + "/good.caffemodel", small); }),
             Catch::Contains("layer 'fc6' (InnerProduct): takes 9216 inputs, but pool5 gives 256 x 5 x 5"));
}

#ifdef ALEXNET_CLI
TEST_CASE("convert --from caffe, then export --format onnx and torchscript, on the command line", "[interop][cli]") {
  const auto dir = test::temp_dir("interop-cli");
  const std::string cli = ALEXNET_CLI;
  auto net = make(AlexNetOptions::caffe().num_classes(10).pool_before_lrn(true), 51);
  write(dir + "/net.caffemodel", to_caffe(*net.model, true).net.bytes);
  std::string out;
  REQUIRE(test::run(cli + " convert --from caffe " + dir + "/net.caffemodel --out " + dir + "/net.pt", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("CaffeNet's order") && Catch::Contains("Caffe's ImageNet channel means"));
  for (const auto* format : {"onnx", "torchscript"}) {
    const auto path = dir + "/net." + format;
    REQUIRE(test::run(cli + " export --weights " + dir + "/net.pt --format " + format + " --out " + path, out, true) == 0);
    CHECK_THAT(out, Catch::Contains("input images [N, 3, 227, 227], 10 classes"));
    // An existing file is kept.
    CHECK(test::run(cli + " export --weights " + dir + "/net.pt --format " + format + " --out " + path, out, true) == 1);
    CHECK(out == "error: '" + path + "' exists; --overwrite to replace it\n");
  }
  auto dnn = cv::dnn::readNetFromONNX(dir + "/net.onnx");
  dnn.setInput(blob(net.input));
  CHECK(relative_error(tensor(dnn.forward()), net.logits) < 1e-5);
  CHECK(test::run(cli + " convert --mean m.binaryproto " + dir + "/net.caffemodel --out " + dir + "/x.pt", out, true) == 1);
  CHECK(out == "error: --mean is for --from caffe\n");
  CHECK(test::run(cli + " convert --from caffe " + dir + "/net.pt --out " + dir + "/x.pt", out, true) == 1);
  CHECK_THAT(out, Catch::StartsWith("error: caffemodel '" + dir + "/net.pt': "));
  CHECK(!std::ifstream(dir + "/x.pt"));
}
// Another runtime can reproduce `alexnet classify` from the exported file alone:
// scripts/onnx_reference.py follows the rule the metadata states (reduced-scale JPEG
// decoding, uint8 area/bilinear resizing, the crops, the mean) with OpenCV, and its
// logits match classify's. Decoding the JPEG at full scale instead gives 4e-2.
TEST_CASE("scripts/onnx_reference.py preprocesses as classify does: the same logits on JPEG and PNG",
          "[interop][onnx][cli]") {
  if (!python_has("onnx, cv2, numpy")) return;
  const auto dir = test::temp_dir("onnx-reference");
  const std::string cli = ALEXNET_CLI;
  const std::string photos = "/usr/lib/python3/dist-packages/skimage/data";
  // Small side 72: rocket.jpg (427x640) decodes at 1/4, retina.jpg (1411x1411) at 1/8;
  // coffee.png shrinks, a 28x28 PNG enlarges, a 16-bit grey PNG is scaled, a 6:1 JPEG
  // strip is cut to its square first.
  const auto astronaut = cv::imread(photos + "/astronaut.png");
  REQUIRE(!astronaut.empty());
  cv::Mat small, strip, grey, grey16;
  cv::resize(astronaut, small, {28, 28}, 0, 0, cv::INTER_AREA);
  cv::resize(astronaut, strip, {600, 100}, 0, 0, cv::INTER_AREA);
  cv::cvtColor(astronaut, grey, cv::COLOR_BGR2GRAY);
  grey.convertTo(grey16, CV_16U, 257.0, 100.0);
  REQUIRE((cv::imwrite(dir + "/small.png", small) && cv::imwrite(dir + "/strip.jpg", strip) &&
           cv::imwrite(dir + "/grey16.png", grey16)));
  std::vector<std::string> images{photos + "/rocket.jpg", photos + "/retina.jpg", photos + "/coffee.png",
                                  dir + "/small.png", dir + "/grey16.png", dir + "/strip.jpg"};
  std::string list;
  for (const auto& image : images) list += " " + image;
  for (const auto mean : {Mean::kImage, Mean::kChannels}) {
    auto net = make(AlexNetOptions::caffe().input_size(67).num_classes(10), 61);
    {
      // Without biases the logits follow the input, not Caffe's constant bias paths: a
      // pixel off by one shows.
      torch::NoGradGuard no_grad;
      for (const auto& layer : net.model->learned_layers()) layer.bias.zero_();
    }
    const std::string name = mean == Mean::kImage ? "image" : "channels";
    INFO("mean " << name);
    auto pre = Preprocessing::from_statistics(net.pre.classes, mean, at::rand({3, 72, 72}, at::kDouble) * 255,
                                              at::tensor({121.0, 116.5, 101.25}, at::kDouble), 72, 67);
    if (mean == Mean::kChannels) pre.std_rgb = at::tensor({58.5, 57.0, 57.5}, at::kDouble);
    CheckpointExtras extras;
    pre.add_to(extras);
    save(*net.model, dir + "/" + name + ".pt", extras);
    std::string out;
    REQUIRE(test::run(cli + " export --weights " + dir + "/" + name + ".pt --format onnx --out " + dir + "/" + name +
                          ".onnx",
                      out, true) == 0);
    std::string ours, theirs;
    REQUIRE(test::run(cli + " classify --json --logits --precision fp32 --top 1 --weights " + dir + "/" + name + ".pt" +
                          list,
                      ours) == 0);
    REQUIRE(test::run("/usr/bin/python3 " ALEXNET_SOURCE_DIR "/scripts/onnx_reference.py " + dir + "/" + name +
                          ".onnx" + list,
                      theirs, true) == 0);
    INFO(ours << theirs);
    const auto rows = [](const std::string& text) {
      std::vector<at::Tensor> logits;
      const std::regex row("\"logits\": ?\\[([^\\]]*)\\]");
      for (auto it = std::sregex_iterator(text.begin(), text.end(), row); it != std::sregex_iterator(); ++it) {
        std::vector<double> values;
        std::istringstream list((*it)[1].str());
        for (std::string v; std::getline(list, v, ',');) values.push_back(std::stod(v));
        logits.push_back(at::tensor(values, at::kDouble));
      }
      return logits;
    };
    const auto a = rows(ours), b = rows(theirs);
    REQUIRE(a.size() == images.size());
    REQUIRE(b.size() == images.size());
    for (size_t i = 0; i < images.size(); ++i) {
      const double e = relative_error(b[i], a[i]);
      WARN(images[i] << " (mean " << name << "): the reference's logits against classify's, relative error " << e);
      CHECK(e < 1e-5);
    }
  }
  // The exported metadata states the rule the reference follows.
  std::string meta;
  REQUIRE(test::run("/usr/bin/python3 -c \"import onnx; print({p.key: p.value for p in onnx.load('" + dir +
                        "/image.onnx').metadata_props}['alexnet.preprocessing'])\"",
                    meta) == 0);
  CHECK_THAT(meta, Catch::Contains("IMREAD_REDUCED_COLOR_n") && Catch::Contains("area when shrinking, bilinear when enlarging") &&
                       Catch::Contains("more than 4 times longer than wide"));
}

#endif
