#include "helpers.h"

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/error.h>

#include <catch2/catch.hpp>
#include <torch/serialize.h>

#include <filesystem>
#include <fstream>

using alexnet::AlexNet;
using alexnet::AlexNetOptions;
namespace fs = std::filesystem;

namespace {

AlexNetOptions small_options() { return AlexNetOptions::caffe().input_size(67).num_classes(10); }

bool unchanged(const AlexNet& model, const std::vector<at::Tensor>& before) {
  return alexnet::test::same(alexnet::test::snapshot(*model), before);
}

// The one-line message a load fails with.
template <typename F>
std::string failure(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return alexnet::error_message(e);
  }
  return "no error";
}

}  // namespace

TEST_CASE("A checkpoint holds weights and options and loads into either execution", "[checkpoint]") {
  const auto dir = alexnet::test::temp_dir("checkpoint");
  const auto path = dir + "/model.pt";
  torch::manual_seed(12);
  AlexNet model(small_options().dropout(0.3).lrn(alexnet::LRNOptions().alpha(2e-4).beta(0.7)));
  alexnet::save(*model, path);
  CHECK(fs::exists(path));
  // Nothing but the checkpoint: the temporary file was renamed into place.
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);

  const auto options = alexnet::read_options(path);
  CHECK(options.to_json() == model->options.to_json());
  auto loaded = alexnet::load(path);
  CHECK(loaded->options.dropout() == 0.3);
  CHECK(loaded->options.lrn()->beta() == 0.7);
  const auto before = alexnet::test::snapshot(*model);
  CHECK(unchanged(loaded, before));

  torch::NoGradGuard no_grad;
  model->eval();
  loaded->eval();
  loaded->set_execution(alexnet::Execution::kTowers);
  const auto x = at::randn({2, 3, 67, 67}) * 50;
  CHECK(alexnet::test::relative_error(loaded->forward(x), model->forward(x)) < 1e-5);

  // The torchvision preset round-trips too.
  AlexNet tv(AlexNetOptions::torchvision().num_classes(3));
  alexnet::save(*tv, dir + "/tv.pt");
  CHECK(unchanged(alexnet::load(dir + "/tv.pt"), alexnet::test::snapshot(*tv)));
  fs::remove_all(dir);
}

TEST_CASE("Loading a mismatched checkpoint names the file and the parameter, and changes nothing",
          "[checkpoint]") {
  const auto dir = alexnet::test::temp_dir("mismatch");
  const auto path = dir + "/ten.pt";
  alexnet::save(*AlexNet(small_options()), path);
  AlexNet other(small_options().num_classes(12));
  const auto before = alexnet::test::snapshot(*other);
  CHECK(failure([&] { alexnet::load_weights(*other, path); }) ==
        "checkpoint '" + path +
            "': parameter 'tower0.fc8.weight' has shape [5, 4096] in the file but [6, 4096] in the model");
  CHECK(unchanged(other, before));

  AlexNet tv(AlexNetOptions::torchvision());
  CHECK(failure([&] { alexnet::load_weights(*tv, path); }) ==
        "checkpoint '" + path + "': missing parameter 'features.0.weight'");
  fs::remove_all(dir);
}

TEST_CASE("Truncated, foreign and missing files are refused by name", "[checkpoint]") {
  const auto dir = alexnet::test::temp_dir("corrupt");
  const auto good = dir + "/good.pt";
  alexnet::save(*AlexNet(small_options()), good);
  AlexNet model(small_options());
  const auto before = alexnet::test::snapshot(*model);

  const auto truncated = dir + "/truncated.pt";
  fs::copy_file(good, truncated);
  fs::resize_file(truncated, fs::file_size(good) / 2);
  CHECK_THAT(failure([&] { alexnet::load_weights(*model, truncated); }),
             Catch::StartsWith("checkpoint '" + truncated + "': not a readable checkpoint"));

  // One byte changed anywhere: every zip entry's CRC-32 is checked before LibTorch's
  // reader sees the file (fuzz/checkpoint.cpp crashed LibTorch's TorchScript parser
  // with a damaged archive: fuzz/corpus/checkpoint/crash-torchscript-parser).
  for (const double where : {0.1, 0.5, 0.9}) {
    const auto flipped = dir + "/flipped.pt";
    fs::copy_file(good, flipped, fs::copy_options::overwrite_existing);
    std::fstream f(flipped, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(static_cast<double>(fs::file_size(good)) * where));
    const char byte = static_cast<char>(f.get() ^ 0x20);
    f.seekp(static_cast<std::streamoff>(static_cast<double>(fs::file_size(good)) * where));
    f.put(byte);
    f.close();
    CHECK_THAT(failure([&] { alexnet::load_weights(*model, flipped); }),
               Catch::StartsWith("checkpoint '" + flipped + "': not a readable checkpoint (a damaged or truncated zip "
                                 "archive (") &&
                   Catch::Contains("fails its CRC-32 check"));
  }

  const auto text = dir + "/notes.txt";
  std::ofstream(text) << "not a model\n";
  CHECK_THAT(failure([&] { alexnet::load(text); }),
             Catch::StartsWith("checkpoint '" + text + "': not a readable checkpoint"));

  const auto tensor = dir + "/tensor.pt";
  torch::save(at::ones({3}), tensor);
  CHECK(failure([&] { alexnet::load(tensor); }) ==
        "checkpoint '" + tensor + "': not an AlexNet checkpoint (it has no 'format' entry)");

  CHECK(failure([&] { alexnet::load(dir + "/absent.pt"); }) ==
        "checkpoint '" + dir + "/absent.pt': No such file or directory");
  CHECK(unchanged(model, before));
  fs::remove_all(dir);
}

TEST_CASE("A save that cannot complete leaves nothing behind", "[checkpoint]") {
  const auto dir = alexnet::test::temp_dir("nowhere");
  const auto path = dir + "/missing-folder/model.pt";
  CHECK_THAT(failure([&] { alexnet::save(*AlexNet(small_options()), path); }),
             Catch::StartsWith("checkpoint '" + path + "': cannot write"));
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 0);
  fs::remove_all(dir);
}

TEST_CASE("Options round-trip through JSON, and bad options are named, in both formats", "[checkpoint]") {
  for (const auto& options : {AlexNetOptions::paper(), AlexNetOptions::caffe(), AlexNetOptions::torchvision()}) {
    const auto json = options.to_json();
    CHECK(AlexNetOptions::from_json(json).to_json() == json);
  }
  CHECK_THAT(failure([] { AlexNetOptions::from_json("architecture\n"); }), Catch::StartsWith("model options: not JSON ("));
  const auto json = AlexNetOptions().to_json();
  auto with = [&](const std::string& from, const std::string& to) {
    auto text = json;
    REQUIRE(text.find(from) != std::string::npos);
    return text.replace(text.find(from), from.size(), to);
  };
  CHECK(failure([&] { AlexNetOptions::from_json(with("{", "{\"colour\":\"blue\",")); }) ==
        "model options: unknown field 'colour'");
  CHECK(failure([&] { AlexNetOptions::from_json(with("\"num_classes\":1000", "\"num_classes\":\"ten\"")); }) ==
        "model options: 'num_classes' is not a whole number: \"ten\"");
  // Found by fuzz/checkpoint.cpp: 1e300 was cast to int64 (undefined behaviour).
  CHECK(failure([&] { AlexNetOptions::from_json(with("\"num_classes\":1000", "\"num_classes\":1e300")); }) ==
        "model options: 'num_classes' is not a whole number: 1e+300");
  CHECK(failure([&] { AlexNetOptions::from_json(with("\"init\":\"paper\"", "\"init\":\"he\"")); }) ==
        "model options: 'init' is 'he', not one of paper, caffe, pytorch");
  // The first format's "key=value" lines, read by its own reader, as strictly.
  const auto dir = alexnet::test::temp_dir("format1-options");
  const auto path = dir + "/old.pt";
  const AlexNet model(small_options().num_classes(2).dropout(0));
  auto options_of = [&](const std::string& text) {
    alexnet::test::save_format1(*model, path, text);
    return alexnet::read_options(path);
  };
  const auto text = alexnet::test::format1_caffe_options(2);
  CHECK(options_of(text).to_json() == model->options.to_json());
  CHECK(failure([&] { options_of("architecture\n"); }) ==
        "checkpoint '" + path + "': options line 1 is not key=value: 'architecture'");
  CHECK(failure([&] { options_of(text + "colour=blue\n"); }) == "checkpoint '" + path + "': unknown option 'colour'");
  auto replaced = [&](const std::string& value) {
    auto t = text;
    return t.replace(t.find("num_classes=2"), 13, "num_classes=" + value);
  };
  CHECK(failure([&] { options_of(replaced("ten")); }) ==
        "checkpoint '" + path + "': option 'num_classes' is not a whole number: 'ten'");
  CHECK(failure([&] { options_of(replaced("1e300")); }) ==
        "checkpoint '" + path + "': option 'num_classes' is not a whole number: '1e300'");
  CHECK(failure([] { AlexNet(AlexNetOptions().num_classes(int64_t{1} << 40)); }) ==
        "AlexNet: num_classes must be at most 1048576, got 1099511627776");
}
