#include <alexnet/network/torchscript.h>

#include <alexnet/network/pytorch.h>

#include "network/atomic_file.h"
#include "network/graph.h"

#include <torch/csrc/jit/api/module.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace alexnet {
namespace {

using detail::GraphStep;
using Kind = GraphStep::Kind;

// A float literal TorchScript reads back to the same double.
std::string real(double v) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%.17g", v);
  std::string s(buffer);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string attribute(std::string key) {
  std::replace(key.begin(), key.end(), '.', '_');
  return key;
}

// LibTorch's (and PyTorch's) local_response_norm, in operations TorchScript has.
constexpr const char* kLRN = R"(
def local_response_norm(self, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    d = torch.mul(x, x).unsqueeze(1)
    d = torch.constant_pad_nd(d, [0, 0, 0, 0, size // 2, (size - 1) // 2], 0.0)
    d = torch.avg_pool3d(d, [size, 1, 1], [1, 1, 1], [0, 0, 0], False, True, None).squeeze(1)
    return torch.div(x, torch.pow(torch.add(torch.mul(d, alpha), k), beta))
)";

std::string forward_source(const std::vector<GraphStep>& graph) {
  std::ostringstream s;
  s << "\ndef forward(self, images: Tensor) -> Tensor:\n    x = images\n";
  for (const auto& step : graph) {
    const auto n = attribute(step.name);
    switch (step.kind) {
      case Kind::kConv:
        s << "    x = torch.conv2d(x, self." << n << "_weight, self." << n << "_bias, [" << step.stride << ", "
          << step.stride << "], [" << step.padding << ", " << step.padding << "], [1, 1], " << step.groups << ")\n";
        break;
      case Kind::kRelu:
        s << "    x = torch.relu(x)\n";
        break;
      case Kind::kTanh:
        s << "    x = torch.tanh(x)\n";
        break;
      case Kind::kLRN: {
        const auto args = ", " + std::to_string(step.size) + ", " + real(step.alpha) + ", " + real(step.beta) + ", " +
                          real(step.k) + ")";
        if (step.groups == 1) {
          s << "    x = self.local_response_norm(x" << args << "\n";
        } else {  // each tower's maps alone
          s << "    c = x.size(1) // " << step.groups << "\n    x = torch.cat([";
          for (int64_t g = 0; g < step.groups; ++g) {
            s << (g ? ", " : "") << "self.local_response_norm(x.narrow(1, " << g << " * c, c)" << args;
          }
          s << "], 1)\n";
        }
        break;
      }
      case Kind::kMaxPool:
        s << "    x = torch.max_pool2d(x, [" << step.kernel << ", " << step.kernel << "], [" << step.stride << ", "
          << step.stride << "], [0, 0], [1, 1], " << (step.ceil_mode ? "True" : "False") << ")\n";
        break;
      case Kind::kAvgPool:
        s << "    x = torch.avg_pool2d(x, [" << step.kernel << ", " << step.kernel << "], [" << step.stride << ", "
          << step.stride << "])\n";
        break;
      case Kind::kFlatten:
        s << "    x = torch.flatten(x, 1)\n";
        break;
      case Kind::kLinear:
        s << "    x = torch.addmm(self." << n << "_bias, x, self." << n << "_weight.t())\n";
        break;
    }
  }
  s << "    return x\n";
  return s.str();
}

}  // namespace

void save_torchscript(const AlexNetImpl& model, const Preprocessing& preprocessing, const std::string& path) {
  const auto graph = detail::inference_graph(model.options);
  torch::jit::Module module("__torch__.alexnet.AlexNet");
  for (const auto& [key, tensor] : to_state_dict(model)) {
    module.register_parameter(attribute(key), tensor.detach().to(torch::kCPU, torch::kFloat).contiguous().clone(),
                              /*is_buffer=*/false);
  }
  const bool mean_image = preprocessing.mean == Mean::kImage && preprocessing.mean_image.defined();
  if (mean_image) {
    module.register_buffer("mean_image", preprocessing.mean_image.to(torch::kCPU, torch::kFloat).contiguous());
  }
  module.define(kLRN);
  module.define(forward_source(graph));
  module.eval();
  torch::jit::ExtraFilesMap extra{
      {"alexnet.json", detail::preprocessing_json(preprocessing, mean_image ? "buffer mean_image" : "")}};
  detail::write_atomically(path, [&](std::ostream& out) { module.save(out, extra); }, "TorchScript module");
}

}  // namespace alexnet
