#include "helpers.h"

#include <alexnet/checkpoint.h>
#include <alexnet/error.h>

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
  CHECK(alexnet::options_to_string(options) == alexnet::options_to_string(model->options));
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

TEST_CASE("Options round-trip through text and bad text is named", "[checkpoint]") {
  for (const auto& options : {AlexNetOptions::paper(), AlexNetOptions::caffe(), AlexNetOptions::torchvision()}) {
    const auto text = alexnet::options_to_string(options);
    CHECK(alexnet::options_to_string(alexnet::options_from_string(text)) == text);
  }
  CHECK(failure([] { alexnet::options_from_string("architecture\n"); }) ==
        "options line 1 is not key=value: 'architecture'");
  auto text = alexnet::options_to_string(AlexNetOptions());
  CHECK(failure([&] { alexnet::options_from_string(text + "colour=blue\n"); }) == "unknown option 'colour'");
  CHECK(failure([&] { alexnet::options_from_string(text.replace(text.find("num_classes=1000"), 16, "num_classes=ten")); }) ==
        "option 'num_classes' is not a whole number: 'ten'");
  // Found by fuzz/checkpoint.cpp: 1e300 was cast to int64 (undefined behaviour).
  text = alexnet::options_to_string(AlexNetOptions());
  CHECK(failure([&] { alexnet::options_from_string(text.replace(text.find("num_classes=1000"), 16, "num_classes=1e300")); }) ==
        "option 'num_classes' is not a whole number: '1e300'");
  CHECK(failure([] { AlexNet(AlexNetOptions().num_classes(int64_t{1} << 40)); }) ==
        "AlexNet: num_classes must be at most 1048576, got 1099511627776");
}
