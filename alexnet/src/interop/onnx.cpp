#include <alexnet/interop/onnx.h>

#include <alexnet/network/pytorch.h>

#include "network/atomic_file.h"
#include "network/graph.h"

#include <onnx/onnx_pb.h>

#include <ATen/ATen.h>

#include <cstring>
#include <map>

namespace alexnet {
namespace {

using detail::GraphStep;
using Kind = GraphStep::Kind;

void attribute(onnx::NodeProto& node, const std::string& name, std::vector<int64_t> values) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (auto v : values) a->add_ints(v);
}

void attribute(onnx::NodeProto& node, const std::string& name, int64_t value) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

void attribute(onnx::NodeProto& node, const std::string& name, float value) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

std::string base64(const void* data, size_t n) {
  static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (i + 1 < n ? uint32_t{p[i + 1]} << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out += digits[(v >> 18) & 63];
    out += digits[(v >> 12) & 63];
    out += i + 1 < n ? digits[(v >> 6) & 63] : '=';
    out += i + 2 < n ? digits[v & 63] : '=';
  }
  return out;
}

void value_info(onnx::ValueInfoProto& info, const std::string& name, const std::vector<int64_t>& dims) {
  info.set_name(name);
  auto* tensor = info.mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (auto d : dims) shape->add_dim()->set_dim_value(d);
}

}  // namespace

void save_onnx(const AlexNetImpl& model, const Preprocessing& preprocessing, const std::string& path) {
  const auto graph_steps = detail::inference_graph(model.options);
  onnx::ModelProto m;
  m.set_ir_version(6);
  m.set_producer_name("alexnet");
  m.set_producer_version("1");
  m.set_doc_string("AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012), exported by alexnet export --format onnx");
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  auto* g = m.mutable_graph();
  g->set_name("alexnet");

  std::map<std::string, int64_t> channels;  // a conv's output channels, for Split
  for (const auto& [key, tensor] : to_state_dict(model)) {
    const auto t = tensor.detach().to(at::kCPU, at::kFloat).contiguous();
    auto* init = g->add_initializer();
    init->set_name(key);
    init->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : t.sizes()) init->add_dims(d);
    init->set_raw_data(t.data_ptr(), static_cast<size_t>(t.nbytes()));  // little-endian, as ONNX asks
    channels[key] = t.size(0);
  }
  const auto crop = model.options.input_size();
  value_info(*g->add_input(), "images", {3, crop, crop});
  value_info(*g->add_output(), "logits", {model.options.num_classes()});

  std::string x = "images";
  int64_t c = 3;
  int index = 0;
  auto node = [&](const std::string& op, std::vector<std::string> inputs, const std::string& hint) -> onnx::NodeProto& {
    auto* n = g->add_node();
    n->set_op_type(op);
    n->set_name(hint + "_" + std::to_string(index++));
    for (auto& i : inputs) n->add_input(i);
    x = n->name();
    n->add_output(x);
    return *n;
  };
  for (const auto& step : graph_steps) {
    switch (step.kind) {
      case Kind::kConv: {
        auto& n = node("Conv", {x, step.name + ".weight", step.name + ".bias"}, step.name);
        attribute(n, "kernel_shape", {step.kernel, step.kernel});
        attribute(n, "strides", {step.stride, step.stride});
        attribute(n, "pads", {step.padding, step.padding, step.padding, step.padding});
        attribute(n, "group", step.groups);
        c = channels.at(step.name + ".weight");
        break;
      }
      case Kind::kRelu:
        node("Relu", {x}, "relu");
        break;
      case Kind::kTanh:
        node("Tanh", {x}, "tanh");
        break;
      case Kind::kLRN: {
        auto lrn = [&](onnx::NodeProto& n) {
          attribute(n, "size", step.size);
          attribute(n, "alpha", static_cast<float>(step.alpha));
          attribute(n, "beta", static_cast<float>(step.beta));
          attribute(n, "bias", static_cast<float>(step.k));
        };
        if (step.groups == 1) {
          lrn(node("LRN", {x}, "lrn"));
          break;
        }
        // Each tower's maps alone: Split, one LRN per tower, Concat.
        auto& split = node("Split", {x}, "split");
        attribute(split, "axis", int64_t{1});
        attribute(split, "split", std::vector<int64_t>(static_cast<size_t>(step.groups), c / step.groups));
        split.clear_output();
        std::vector<std::string> normalised;
        for (int64_t t = 0; t < step.groups; ++t) {
          split.add_output(split.name() + "_" + std::to_string(t));
          lrn(node("LRN", {split.output(static_cast<int>(t))}, "lrn"));
          normalised.push_back(x);
        }
        attribute(node("Concat", normalised, "concat"), "axis", int64_t{1});
        break;
      }
      case Kind::kMaxPool:
      case Kind::kAvgPool: {
        auto& n = node(step.kind == Kind::kMaxPool ? "MaxPool" : "AveragePool", {x}, "pool");
        attribute(n, "kernel_shape", {step.kernel, step.kernel});
        attribute(n, "strides", {step.stride, step.stride});
        if (step.ceil_mode) attribute(n, "ceil_mode", int64_t{1});
        break;
      }
      case Kind::kFlatten:
        attribute(node("Flatten", {x}, "flatten"), "axis", int64_t{1});
        break;
      case Kind::kLinear:
        attribute(node("Gemm", {x, step.name + ".weight", step.name + ".bias"}, step.name), "transB", int64_t{1});
        break;
    }
  }
  // The last node writes the graph's output.
  g->mutable_node(g->node_size() - 1)->set_output(0, "logits");

  const bool mean_image = preprocessing.mean == Mean::kImage && preprocessing.mean_image.defined();
  auto* meta = m.add_metadata_props();
  meta->set_key("alexnet.preprocessing");
  meta->set_value(detail::preprocessing_json(preprocessing, mean_image ? "metadata alexnet.mean_image" : ""));
  if (mean_image) {
    const auto image = preprocessing.mean_image.to(at::kCPU, at::kFloat).contiguous();
    auto* p = m.add_metadata_props();
    p->set_key("alexnet.mean_image");
    p->set_value(base64(image.data_ptr(), static_cast<size_t>(image.nbytes())));
  }
  std::string bytes;
  if (!m.SerializeToString(&bytes)) throw std::runtime_error("ONNX model '" + path + "': cannot be serialised");
  detail::write_file_atomically(path, bytes, "ONNX model");
}

}  // namespace alexnet
