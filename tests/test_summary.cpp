#include "helpers.h"

#include <alexnet/network/summary.h>

#include <catch2/catch.hpp>

using alexnet::AlexNet;
using alexnet::AlexNetOptions;

TEST_CASE("The paper's network has 60,965,224 parameters and 724,406,816 multiply-adds", "[summary]") {
  const auto s = alexnet::summarize(*AlexNet(AlexNetOptions::paper()));
  CHECK(s.parameters == 60965224);
  CHECK(s.macs == 724406816);
  // Section 3.5's per-layer figures, both towers together.
  std::map<std::string, int64_t> params;
  for (const auto& l : s.layers) params[l.name] += l.parameters;
  CHECK(params["conv1"] == 34944);
  CHECK(params["conv2"] == 307456);
  CHECK(params["conv3"] == 885120);
  CHECK(params["conv4"] == 663936);
  CHECK(params["conv5"] == 442624);
  CHECK(params["fc6"] == 37752832);
  CHECK(params["fc7"] == 16781312);
  CHECK(params["fc8"] == 4097000);
  CHECK(s.layers.front().output == std::vector<int64_t>{48, 55, 55});
  CHECK_THAT(s.to_table(), Catch::Contains("60,965,224") && Catch::Contains("724,406,816"));
  CHECK_THAT(s.to_json(), Catch::EndsWith("\"parameters\":60965224,\"macs\":724406816}"));
}

TEST_CASE("Summary shapes agree with a real forward pass", "[summary]") {
  torch::NoGradGuard no_grad;
  for (const auto& options : {AlexNetOptions::paper().input_size(131).num_classes(12), AlexNetOptions::torchvision()}) {
    AlexNet model(options);
    model->eval();
    const auto s = alexnet::summarize(*model);
    const auto size = options.input_size();
    const auto x = at::zeros({1, 3, size, size});
    int64_t pool5 = 0;
    for (const auto& l : s.layers) {
      if (l.name == "pool5") pool5 += l.output[0] * l.output[1] * l.output[2];
    }
    CHECK(pool5 == model->forward_to(x, alexnet::Layer::kPool5).size(1));
    int64_t fc8 = 0;
    for (const auto& l : s.layers) {
      if (l.name == "fc8") fc8 += l.output[0];
    }
    CHECK(fc8 == model->forward(x).size(1));
  }
  CHECK(alexnet::summarize(*AlexNet(AlexNetOptions::torchvision())).parameters == 61100840);
}
