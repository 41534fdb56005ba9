#include "helpers.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

using alexnet::test::run;

namespace {
const std::string kCli = ALEXNET_CLI;
}

TEST_CASE("alexnet summary prints the paper's totals", "[cli]") {
  std::string out;
  REQUIRE(run(kCli + " summary", out) == 0);
  CHECK_THAT(out, Catch::Contains("60,965,224") && Catch::Contains("724,406,816") &&
                      Catch::Contains("conv1    0      48x55x55"));
  REQUIRE(run(kCli + " summary --arch torchvision", out) == 0);
  CHECK_THAT(out, Catch::Contains("61,100,840"));
  REQUIRE(run(kCli + " summary --arch caffe --input-size 224 --json", out) == 0);
  CHECK_THAT(out, Catch::StartsWith("{\"architecture\":\"two_tower\",\"input_size\":224,\"layers\":[") &&
                      Catch::EndsWith("\"parameters\":60965224,\"macs\":724406816}\n"));
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
}

TEST_CASE("alexnet refuses bad arguments with one line and a non-zero exit", "[cli]") {
  std::string out;
  CHECK(run(kCli + " summary --arch vgg", out, true) != 0);
  CHECK(out == "error: --arch: vgg not in {paper,caffe,torchvision} (see alexnet --help)\n");
  CHECK(run(kCli + " summary --input-size 50", out, true) == 1);
  CHECK_THAT(out, Catch::StartsWith("error: AlexNet: input size 50 with conv1 padding 0 is too small"));
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(run(kCli + " frobnicate", out, true) != 0);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(run(kCli, out, true) != 0);
  CHECK(run(kCli + " summary --help", out) == 0);
  CHECK_THAT(out, Catch::Contains("--arch") && Catch::Contains("--json"));
}
