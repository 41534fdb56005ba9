// Fine-tuning: a run that starts from a checkpoint's weights (RunConfig::weights), with
// layers frozen and Caffe's learning-rate multipliers, as the library offers it.

#include "fixtures.h"
#include "helpers.h"

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/pytorch.h>
#include <alexnet/network/runtime.h>
#include <alexnet/network/trainer.h>
#include <alexnet/train/run.h>

#include <catch2/catch.hpp>
#include <torch/nn/functional/loss.h>

#include <filesystem>
#include <map>

using namespace alexnet;
namespace fs = std::filesystem;

namespace {

RunConfig small_config(const std::string& data, int64_t epochs) {
  RunConfig config;
  config.data(data).arch("caffe").input_size(67);
  config.train().epochs(epochs).batch_size(4).workers(1).resize(72).seed(5).pca_std(0.1);
  config.trainer().lr(0.001);
  return config;
}

std::map<std::string, torch::Tensor> state_of(const AlexNetImpl& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [key, tensor] : to_state_dict(model)) out[key] = tensor.detach().clone();
  return out;
}

// A data set of the colour classes "1" and a new "2" (a third colour), from `colours`.
std::string other_classes(const std::string& colours) {
  const auto root = test::temp_dir("finetune-other");
  fs::copy(colours + "/1", root + "/1");
  fs::create_directories(root + "/2");
  for (const auto& e : fs::directory_iterator(colours + "/0")) fs::copy(e.path(), root + "/2/" + e.path().filename().string());
  return root;
}

}  // namespace

TEST_CASE("Fine-tuning loads every layer bit for bit, and fc8's rows by class name", "[train][finetune]") {
  const auto colours = test::make_colours("finetune-source", 4);
  const auto base = test::temp_dir("finetune");
  Run::create(base + "/source", small_config(colours, 1)).fit();
  const auto weights = base + "/source/best.pt";
  const auto source = state_of(*load(weights));

  const auto data = other_classes(colours);  // "1" (the source's second class) and "2" (new)
  std::vector<std::string> said;
  TrainHooks hooks;
  hooks.on_info = [&](const std::string& text) { said.push_back(text); };
  auto config = small_config(data, 1).weights(weights);
  auto run = Run::create(base + "/tuned", config, RunOptions().hooks(hooks));
  const auto tuned = state_of(*run.trainer().model());
  for (const auto& [key, tensor] : source) {
    INFO(key);
    if (key.rfind("fc8.", 0) == 0) {
      CHECK(torch::equal(tuned.at(key)[0], tensor[1]));  // class "1" keeps its row
      continue;
    }
    CHECK(torch::equal(tuned.at(key), tensor));
  }
  // Class "2" is new: the row the preset's initialisation gives, from the run's seed.
  manual_seed(5);
  const AlexNet fresh(AlexNetOptions::caffe().input_size(67).num_classes(2));
  const auto initial = state_of(*fresh);
  CHECK(torch::equal(tuned.at("fc8.weight")[1], initial.at("fc8.weight")[1]));
  CHECK(torch::equal(tuned.at("fc8.bias")[1], initial.at("fc8.bias")[1]));
  bool reported = false;
  for (const auto& line : said) {
    reported = reported || line.find("fine-tuning from " + weights + ": every layer loaded, fc8 1 of the 2 classes "
                                     "kept (of its 2), 1 new") != std::string::npos;
  }
  CHECK(reported);
  // The weights' preprocessing is kept (the caffe preset's mean image, at its resize).
  const auto [loaded, weights_pre] = load_for_inference(weights);
  CHECK(torch::equal(run.preprocessing().mean_image, weights_pre.mean_image));
  CHECK(run.preprocessing().classes == std::vector<std::string>{"1", "2"});
  // A layer that cannot be loaded is refused by name, with both shapes, leaving nothing.
  CHECK(test::message_of([&] { Run::create(base + "/wide", small_config(data, 1).weights(weights).input_size(71)); }) ==
        "weights '" + weights + "': fc6.weight is [4096, 256] there and [4096, 1024] here (input 71, the weights' "
        "67): fine-tune at the weights' input size");
  CHECK_FALSE(fs::exists(base + "/wide"));
  CHECK_THAT(test::message_of([&] { Run::create(base + "/none", small_config(data, 1).weights(base + "/none.pt")); }),
             Catch::StartsWith("checkpoint '" + base + "/none.pt': "));
  CHECK_FALSE(fs::exists(base + "/none"));
}

// Section 5's update with Caffe's multipliers, by hand: after one step from zero
// momentum, w' = w - lr k (grad + weight_decay w) with k the layer's multiplier; a
// frozen layer is bitwise what it was and gathers no momentum.
TEST_CASE("Frozen layers stay bitwise, and lr_mult scales the update as Caffe's does", "[train][finetune]") {
  torch::manual_seed(41);
  const auto options = AlexNetOptions::caffe().input_size(67).num_classes(3).dropout(0.0);
  AlexNet model(options), reference(options);
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < model->parameters().size(); ++i) reference->parameters()[i].copy_(model->parameters()[i]);
  }
  const auto x = torch::randn({4, 3, 67, 67}) * 40;
  const auto y = torch::tensor({0, 1, 2, 1});
  torch::nn::functional::cross_entropy(reference->forward(x), y).backward();
  const double lr = 0.01, decay = 5e-4;
  Trainer trainer(model, TrainerOptions()
                             .lr(lr)
                             .weight_decay(decay)
                             .freeze({"conv1", "conv2", "conv3", "conv4", "conv5"})
                             .lr_mult({{"fc8", 10}, {"fc7.bias", 2}}));
  trainer.step(x, y);
  // The step each parameter took is its momentum (zero before it): compared there, not
  // as a difference of weights that float32 rounds.
  const auto state = trainer.state();
  std::map<const void*, std::string> layer_of;
  for (const auto& l : model->learned_layers()) {
    layer_of[l.weight.unsafeGetTensorImpl()] = l.name;
    layer_of[l.bias.unsafeGetTensorImpl()] = l.name + ".bias";
  }
  const auto now = model->named_parameters();
  const auto was = reference->parameters();
  for (size_t i = 0; i < was.size(); ++i) {
    const auto& key = now[i].key();
    const auto layer = layer_of.at(now[i].value().unsafeGetTensorImpl());
    INFO(key);
    if (layer.rfind("conv", 0) == 0) {
      CHECK(torch::equal(now[i].value(), was[i]));
      CHECK_FALSE(now[i].value().grad().defined());
      CHECK(state.tensors.count("momentum/" + key) == 0);
      continue;
    }
    const double k = layer.rfind("fc8", 0) == 0 ? 10 : layer == "fc7.bias" ? 2 : 1;
    const auto w = was[i].detach().to(torch::kDouble);
    const auto expected = -lr * k * (was[i].grad().to(torch::kDouble) + decay * w);
    CHECK(test::relative_error(state.tensors.at("momentum/" + key), expected) < 1e-5);
  }
  CHECK(state.tensors.count("momentum/tower0.conv1.weight") == 0);
  CHECK(state.tensors.count("momentum/tower0.fc8.weight") == 1);
  CHECK_THROWS_WITH(Trainer(AlexNet(options), TrainerOptions().freeze({"conv9"})),
                    "freeze has 'conv9', not a layer (conv1 .. conv5, fc6 .. fc8)");
  CHECK_THROWS_WITH(Trainer(AlexNet(options), TrainerOptions().lr_mult({{"fc9", 2}})),
                    "lr_mult has 'fc9', not a layer (conv1 .. fc8) or one's weight or bias (fc8.bias)");
  CHECK_THROWS_WITH(Trainer(AlexNet(options), TrainerOptions().freeze({"fc8"}).lr_mult({{"fc8", 10}})),
                    "lr_mult of fc8: fc8 is frozen, so it does not train");
  // As the command line gives them.
  RunConfig config;
  config.set("freeze", "..conv3,fc7..");
  CHECK(config.get("freeze") == "conv1,conv2,conv3,fc7,fc8");
  config.set("lr_mult", "fc8=10,fc6.bias=0.5");
  CHECK(config.get("lr_mult") == "fc6.bias=0.5,fc8=10");
  CHECK_THROWS_WITH(config.set("freeze", "conv5..conv1"), "freeze has 'conv5..conv1', a range that runs backwards");
  CHECK_THROWS_WITH(config.set("lr_mult", "fc8"), "lr_mult has 'fc8', not LAYER=MULTIPLIER (fc8=10)");
  CHECK_THROWS_WITH(config.set("lr_mult", "fc8=ten"), "lr_mult takes a number, got 'ten'");
}

TEST_CASE("Torchvision's weights fine-tune with ImageNet's mean and std kept, or the data's when asked",
          "[train][finetune]") {
  const auto data = test::make_colours("finetune-tv", 4);
  const auto base = test::temp_dir("finetune-tv-out");
  // torchvision's network and preprocessing, as `alexnet convert --from torchvision`
  // writes them, at a small input so that the test is quick.
  torch::manual_seed(7);
  const AlexNet tv(AlexNetOptions::torchvision().input_size(67).num_classes(1000));
  auto pre = Preprocessing::torchvision({});
  for (int c = 0; c < 1000; ++c) pre.classes.push_back("class " + std::to_string(c));
  pre.resize = 72;
  pre.crop = 67;
  CheckpointExtras extras;
  pre.add_to(extras);
  save(*tv, base + "/tv.pt", extras);

  auto config = small_config(data, 1).weights(base + "/tv.pt");
  config.train().resize(256);  // the weights' resize wins: their input is kept
  auto run = Run::create(base + "/kept", config);
  CHECK(run.config().train().resize() == 72);
  CHECK(torch::equal(run.preprocessing().mean_rgb, pre.mean_rgb));
  CHECK(torch::equal(run.preprocessing().std_rgb, pre.std_rgb));
  CHECK(run.trainer().model()->options.architecture() == Architecture::kTorchvision);
  REQUIRE(run.fit() == Run::Outcome::kFinished);
  const auto best = Preprocessing::from(read_extras(run.best()), run.best());
  CHECK(torch::equal(best.std_rgb, pre.std_rgb));  // what it was trained with, for inference
  CHECK(best.classes == std::vector<std::string>{"0", "1"});

  config.train().normalize(Normalize::kData);
  auto own = Run::create(base + "/own", config);
  CHECK_FALSE(own.preprocessing().std_rgb.defined());
  CHECK(own.config().train().resize() == 256);
  CHECK_FALSE(torch::equal(own.preprocessing().mean_rgb, pre.mean_rgb));
}

TEST_CASE("A fine-tuning run resumes bitwise without its weights, frozen layers untouched", "[train][finetune]") {
  const auto colours = test::make_colours("finetune-resume", 4);
  const auto base = test::temp_dir("finetune-resume-out");
  Run::create(base + "/source", small_config(colours, 1)).fit();
  const auto weights = base + "/weights.pt";
  fs::copy_file(base + "/source/best.pt", weights);
  const auto source = state_of(*load(weights));
  const auto data = other_classes(colours);
  auto config = small_config(data, 2).weights(weights);
  config.trainer().freeze({"conv1", "conv2", "conv3", "conv4", "conv5"}).lr_mult({{"fc8", 10}});

  auto straight = Run::create(base + "/straight", config);
  straight.fit();
  const auto expected = test::snapshot(*straight.trainer().model());
  const auto trained = state_of(*straight.trainer().model());
  for (const auto& [key, tensor] : source) {
    INFO(key);
    CHECK(torch::equal(trained.at(key), tensor) == (key.rfind("conv", 0) == 0));
  }

  auto first = config;
  first.train().epochs(1);
  Run::create(base + "/split", first).fit();
  fs::remove(weights);  // resuming needs only the run
  auto resumed = Run::resume(base + "/split", [](RunConfig& c) { c.train().epochs(2); });
  CHECK(resumed.config().get("freeze") == "conv1,conv2,conv3,conv4,conv5");
  CHECK(resumed.config().get("lr_mult") == "fc8=10");
  REQUIRE(resumed.fit() == Run::Outcome::kFinished);
  CHECK(test::same(test::snapshot(*resumed.trainer().model()), expected));
}
