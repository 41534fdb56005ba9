#include "fixtures.h"
#include "helpers.h"

#include <alexnet/data/dataset.h>
#include <alexnet/data/statistics.h>
#include <alexnet/network/trainer.h>
#include <alexnet/train/inference.h>
#include <alexnet/train/run.h>
#include <alexnet/train/visualize.h>

#include <catch2/catch.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>

#include <filesystem>
#include <fstream>
#include <random>

using namespace alexnet;
using alexnet::test::make_colours;
namespace fs = std::filesystem;

namespace {

AlexNet small_model(uint64_t seed) {
  torch::manual_seed(seed);
  return AlexNet(AlexNetOptions::caffe().input_size(67).num_classes(2));
}

// A run on `data` (also its validation data) of the caffe preset at input 67.
RunConfig small_config(const std::string& data, int64_t epochs) {
  RunConfig config;
  config.data(data).val(data).arch("caffe").input_size(67);
  config.train().epochs(epochs).batch_size(4).workers(1).resize(72).seed(5).pca_std(0.1);
  config.trainer().lr(0.001);
  return config;
}

// A small colour set with its source and statistics, and a run folder beside it; both
// folders go when the test ends, passed or not.
// (Lambdas name its members: C++17 lambdas cannot capture structured bindings.)
struct ColourSet {
  std::string root, run;
  std::shared_ptr<data::Source> source;
  data::Statistics stats;
  ColourSet(const std::string& name, int per_class)
      : root(make_colours(name, per_class)), run(root + "-run"), source(data::open_image_folder(root)),
        stats(data::compute_statistics(*source, 72, 1)) {}
  ~ColourSet() {
    fs::remove_all(root);
    fs::remove_all(run);
  }
};


}  // namespace

TEST_CASE("bf16 mixed precision trains on the CPU, fp16 asks for CUDA", "[train][precision]") {
  const ColourSet colours("bf16", 12);
  const auto& [root, run_dir, source, stats] = colours;
  // lr 0.003: at 0.01 twelve images drive the logits to saturation (a loss of exactly
  // 0) within two epochs; from there a bf16 run blew up in one summation order
  // (channels-last) and not in another (NCHW).
  auto config = small_config(root, 5).arch("torchvision");
  config.trainer().lr(0.003).precision(Precision::kBf16);
  auto run = Run::create(run_dir, config);
  REQUIRE(run.fit() == Run::Outcome::kFinished);
  const auto& h = run.history();
  INFO("first epoch " << h.front().to_json() << "\nlast epoch " << h.back().to_json());
  CHECK(std::isfinite(h.back().train_loss));
  CHECK(h.back().train_loss < 0.5 * h.front().train_loss);
  CHECK(h.back().val_top1 == 1.0);
  CHECK(run.trainer().model()->parameters()[0].scalar_type() == torch::kFloat);  // master weights stay float32
  CHECK(test::message_of([&] { Trainer(small_model(1), TrainerOptions().precision(Precision::kFp16)); }) ==
        "precision fp16 needs a CUDA device; on CPUs use bf16");
  config.trainer().precision(Precision::kFp16);
  CHECK(test::message_of([&] { Run::create(colours.run + "-fp16", config); }) ==
        "precision fp16 needs a CUDA device; on CPUs use bf16");
  CHECK_FALSE(fs::exists(run_dir + "-fp16"));  // refused before anything was made
}

TEST_CASE("Training on a small data set lowers the loss and writes the run directory", "[train]") {
  const ColourSet colours("learn", 12);
  const auto& [root, run_dir, source, stats] = colours;
  // LibTorch's initialisation leaves no flat start, so a few dozen steps show learning.
  auto config = small_config(root, 5).arch("torchvision");
  config.trainer().lr(0.01);
  std::vector<std::string> warnings;
  TrainHooks hooks;
  hooks.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  auto run = Run::create(run_dir, config, RunOptions().hooks(hooks));
  REQUIRE(run.fit() == Run::Outcome::kFinished);
  const auto& h = run.history();
  REQUIRE(h.size() == 5);
  INFO("first epoch " << h.front().to_json() << "\nlast epoch " << h.back().to_json());
  CHECK(h.back().train_loss < 0.5 * h.front().train_loss);
  CHECK(h.back().val_top1 == 1.0);
  for (const char* file : {"last.pt", "best.pt", "metrics.jsonl"}) CHECK(fs::exists(run_dir + "/" + file));
  // metrics.jsonl: one JSON object per epoch, every documented field.
  std::string out;
  CHECK(test::run("/usr/bin/python3 -c \"import json,sys; rows=[json.loads(l) for l in open('" + run_dir +
                      "/metrics.jsonl')]; print(len(rows), sorted(rows[-1]))\"",
                  out) == 0);
  CHECK(out == "5 ['epoch', 'images_per_second', 'lr', 'seconds', 'train_loss', 'train_top1', 'val_loss', "
               "'val_top1', 'val_top5']\n");
  // The checkpoint carries what inference needs.
  const auto pre = Preprocessing::from(read_extras(run_dir + "/best.pt"), run_dir + "/best.pt");
  CHECK(pre.classes == std::vector<std::string>{"0", "1"});
  CHECK((pre.resize == 72 && pre.crop == 67));
  // One read gives the same model (last.pt: the final weights) and preprocessing.
  auto [loaded, same_pre] = load_for_inference(run_dir + "/last.pt");
  CHECK(same_pre.classes == pre.classes);
  CHECK(torch::equal(same_pre.mean_rgb, pre.mean_rgb));
  CHECK(torch::equal(loaded->parameters()[0], run.trainer().model()->parameters()[0]));
}

TEST_CASE("Resuming is bitwise exact, after an epoch and after a stop mid-epoch", "[train]") {
  const ColourSet colours("resume", 6);
  const auto& [root, run_dir, source, stats] = colours;

  auto straight = Run::create(run_dir + "/straight", small_config(root, 2));
  straight.fit();
  const auto expected = test::snapshot(*straight.trainer().model());

  Run::create(run_dir + "/split", small_config(root, 1)).fit();
  auto second = Run::resume(run_dir + "/split", [](RunConfig& c) { c.train().epochs(2); });
  CHECK(second.trainer().epoch() == 1);
  second.fit();
  CHECK(test::same(test::snapshot(*second.trainer().model()), expected));
  CHECK(second.history().size() == 2);

  // Stopped after the second step of the first epoch, as Ctrl-C does.
  std::atomic<bool> stop{false};
  TrainHooks hooks;
  hooks.stop = &stop;
  hooks.on_step = [&](int64_t, int64_t step, int64_t, double, double) { stop = step == 2; };
  auto interrupted = Run::create(run_dir + "/stopped", small_config(root, 2), RunOptions().hooks(hooks));
  REQUIRE(interrupted.fit() == Run::Outcome::kStopped);
  auto resumed = Run::resume(run_dir + "/stopped");
  REQUIRE(resumed.fit() == Run::Outcome::kFinished);
  CHECK(test::same(test::snapshot(*resumed.trainer().model()), expected));
  CHECK(resumed.history()[0].train_loss == straight.history()[0].train_loss);

  CHECK_THROWS_WITH(read_extras(root + "/0/0.png"),
                    Catch::Equals("checkpoint '" + root + "/0/0.png': a PNG image, not weights"));
}

// The trainer alone: its state saved with the weights (`state`) and taken back
// (`restore`) makes the next step bitwise the step of the trainer it came from.
TEST_CASE("A trainer's state restores its steps exactly", "[train]") {
  const auto dir = test::temp_dir("trainer-state");
  const auto x = torch::randn({4, 3, 67, 67}) * 40;
  const auto y = torch::tensor({0, 1, 1, 0});
  Trainer first(small_model(8), TrainerOptions().lr(0.01));
  torch::manual_seed(3);
  first.step(x, y);
  first.next_epoch();
  first.step(x, y);
  const auto state = first.state();
  CHECK(state.strings.count("trainer") == 1);
  CHECK(state.tensors.count("momentum/tower0.fc8.weight") == 1);
  CHECK(state.tensors.count("rng/cpu") == 1);
  save(*first.model(), dir + "/last.pt", state);
  first.step(x, y);  // dropout masks from the generator as saved

  Trainer second(small_model(9), TrainerOptions().lr(0.5));
  CheckpointExtras extras;
  load_weights(*second.model(), dir + "/last.pt", &extras);
  second.restore(extras, dir + "/last.pt");  // the generator back as saved
  CHECK(second.epoch() == 1);
  CHECK(second.steps_in_epoch() == 1);
  CHECK(second.lr() == 0.01);
  second.step(x, y);
  CHECK(test::same(test::snapshot(*second.model()), test::snapshot(*first.model())));
  extras.strings["trainer"] = "{\"epoch\":1}";
  CHECK(test::message_of([&] { second.restore(extras, "memory"); }) ==
        "checkpoint 'memory': malformed training state: no field 'step'");
  extras.strings.erase("trainer");
  CHECK(test::message_of([&] { second.restore(extras, "memory"); }) ==
        "checkpoint 'memory': has no training state to resume from");
}

// Two classes of 96x96 pictures with an edge whose place changes from image to image
// (a red band on the left, a blue band on top): crops 29 pixels apart see other
// things, so their outputs disagree.
std::string make_edges(const std::string& name) {
  const auto root = test::temp_dir(name);
  for (int c = 0; c < 2; ++c) {
    fs::create_directories(root + "/" + std::to_string(c));
    for (int i = 0; i < 4; ++i) {
      data::Image image;
      image.height = image.width = 96;
      image.channels = 3;
      image.pixels.assign(96 * 96 * 3, 40);
      const int edge = 20 + 12 * i;
      for (int y = 0; y < 96; ++y) {
        for (int x = 0; x < 96; ++x) {
          if ((c == 0 ? x : y) < edge) image.pixels[(y * 96 + x) * 3 + (c == 0 ? 0 : 2)] = 230;
        }
      }
      data::write_image(image, root + "/" + std::to_string(c) + "/" + std::to_string(i) + ".png");
    }
  }
  return root;
}

TEST_CASE("Evaluation and classification agree with a direct forward pass", "[train]") {
  const auto root = make_edges("evaluate");
  const auto source = data::open_image_folder(root);
  const auto stats = data::compute_statistics(*source, 96, 1);
  // Six outputs for the set's two classes, so that top-5 can miss; fc8 scaled so that
  // the ten crops' logits spread by about 2 around their mean (a fresh network's crops
  // differ by about 1e-4, and the two orders of averaging would then agree within any
  // tolerance).
  torch::manual_seed(4);
  AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(6));
  data::ImageDataset ten(source, data::TransformOptions().resize(96).crop(67).mode(data::Mode::kTenCrop).pca_std(0));
  const auto ten_batch = ten.get_batch({0, 1, 2, 3, 4, 5, 6, 7});
  model->eval();
  {
    // fc8's rows made blind to what every crop's fc7 shares (their mean), so that the
    // logits come from what differs between crops and images, then scaled.
    torch::NoGradGuard no_grad;
    const auto fc7 = model->forward_to(data::normalize(ten_batch, stats, torch::kCPU), Layer::kFc7);
    const auto shared = fc7.mean(0);
    for (auto& p : model->named_parameters()) {
      if (p.key().find("fc8.weight") != std::string::npos) {
        p.value().sub_(torch::outer(p.value().mv(shared) / shared.dot(shared), shared));
      }
    }
    const auto logits = model->forward(data::normalize(ten_batch, stats, torch::kCPU)).view({8, 10, 6});
    const double spread = (logits - logits.mean(1, /*keepdim=*/true)).std().item<double>();
    for (auto& p : model->named_parameters()) {
      if (p.key().find("fc8.weight") != std::string::npos) p.value().mul_(2.0 / spread);
    }
  }
  const Preprocessing pre{{"0", "1", "2", "3", "4", "5"}, stats.mean_rgb, 96, 67};
  const auto e = evaluate(model, source, pre, InferenceOptions().batch_size(3).workers(1));
  // The same by hand: centre crops, mean subtracted, softmax, channels-last as inference
  // runs on a CPU (NCHW differs by float32 rounding, a few 1e-5 with these logits).
  const auto channels_last = [](const at::Tensor& x) { return x.contiguous(at::MemoryFormat::ChannelsLast); };
  data::ImageDataset dataset(source, data::TransformOptions().resize(96).crop(67).mode(data::Mode::kCenter).pca_std(0));
  const auto batch = dataset.get_batch({0, 1, 2, 3, 4, 5, 6, 7});
  model->eval();
  torch::NoGradGuard no_grad;
  const auto probabilities = model->forward(channels_last(data::normalize(batch, stats, torch::kCPU))).softmax(1);
  auto accuracy = [&](const at::Tensor& p, int64_t k) {
    const auto top = std::get<1>(p.topk(k, 1));
    return top.eq(batch.labels.unsqueeze(1)).any(1).to(torch::kDouble).mean().item<double>();
  };
  const double loss = -probabilities.gather(1, batch.labels.unsqueeze(1)).log().mean().item<double>();
  CHECK(e.images == 8);
  CHECK(e.top1 == Approx(accuracy(probabilities, 1)));
  CHECK(e.top5 == Approx(accuracy(probabilities, 5)));
  CHECK(e.loss == Approx(loss).epsilon(1e-5));
  std::vector<std::string> files;
  for (size_t i = 0; i < source->size(); ++i) files.push_back(source->describe(i));
  CHECK(test::relative_error(classify(model, files, pre), probabilities) < 1e-6);

  // Ten crops (Section 4.1): the mean of the ten softmax outputs, not the softmax of the
  // mean logits; here the two differ by far more than the tolerance.
  const auto logits = model->forward(channels_last(data::normalize(ten_batch, stats, torch::kCPU))).view({8, 10, 6});
  const auto mean_of_softmax = logits.softmax(2).mean(1);
  const auto softmax_of_mean = logits.mean(1).softmax(1);
  REQUIRE(test::relative_error(softmax_of_mean, mean_of_softmax) > 1e-3);
  CHECK(test::relative_error(classify(model, files, pre, InferenceOptions().ten_crop(true)), mean_of_softmax) < 1e-6);
  const auto e10 = evaluate(model, source, pre, InferenceOptions().batch_size(3).workers(1).ten_crop(true));
  const double loss10 = -mean_of_softmax.gather(1, batch.labels.unsqueeze(1)).log().mean().item<double>();
  const double loss10_of_mean = -softmax_of_mean.gather(1, batch.labels.unsqueeze(1)).log().mean().item<double>();
  REQUIRE(std::abs(loss10 - loss10_of_mean) > 1e-3 * std::abs(loss10));
  CHECK(e10.loss == Approx(loss10).epsilon(1e-5));
  CHECK(e10.top1 == Approx(accuracy(mean_of_softmax, 1)));
  CHECK_THAT(e.to_json(pre.classes), Catch::StartsWith("{\"images\":8,\"top1\":") &&
                                         Catch::Contains("{\"index\":1,\"label\":\"1\",\"images\":4,\"top1\":"));
  fs::remove_all(root);
}

TEST_CASE("Evaluation and classification subtract the mean image at each crop's window", "[train]") {
  const ColourSet colours("mean-image", 3);
  const auto& [root, run, source, stats] = colours;
  torch::manual_seed(4);
  AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(2));
  // A mean image that changes from pixel to pixel, so that a wrong window, a missing
  // mirror or per-channel means give other inputs.
  const auto image = torch::rand({3, 72, 72}) * 255;
  const auto pre = Preprocessing::from_statistics(source->classes(), Mean::kImage, image, stats.mean_rgb, 72, 67);
  std::vector<std::string> files;
  for (size_t i = 0; i < source->size(); ++i) files.push_back(source->describe(i));
  model->eval();
  torch::NoGradGuard no_grad;
  // By hand: the centre window is at (2, 2) of the 72x72 image; the ten crops are the
  // corners and the centre, then the same mirrored, and the mean image with them.
  data::ImageDataset centre(source, data::TransformOptions().resize(72).crop(67).mode(data::Mode::kCenter).pca_std(0));
  const auto batch = centre.get_batch({0, 1, 2, 3, 4, 5});
  const auto window = [&](int64_t x0, int64_t y0, bool flip) {
    auto w = image.slice(1, y0, y0 + 67).slice(2, x0, x0 + 67);
    return flip ? w.flip(2) : w;
  };
  const auto expected = model->forward(batch.images.to(torch::kFloat) - window(2, 2, false)).softmax(1);
  CHECK(test::relative_error(classify(model, files, pre), expected) < 1e-6);
  const auto e = evaluate(model, source, pre, InferenceOptions().batch_size(4).workers(1));
  const double loss = -expected.gather(1, batch.labels.unsqueeze(1)).log().mean().item<double>();
  CHECK(e.loss == Approx(loss).epsilon(1e-5));
  // The channel means instead give another answer: the check above can fail.
  const Preprocessing channels{source->classes(), stats.mean_rgb, 72, 67};
  REQUIRE(test::relative_error(classify(model, files, channels), expected) > 1e-3);

  data::ImageDataset ten(source, data::TransformOptions().resize(72).crop(67).mode(data::Mode::kTenCrop).pca_std(0));
  const auto crops = ten.get_batch({0}).images.to(torch::kFloat);
  const int64_t xs[5] = {0, 5, 0, 5, 2}, ys[5] = {0, 0, 5, 5, 2};
  std::vector<at::Tensor> inputs;
  for (int64_t v = 0; v < 10; ++v) inputs.push_back(crops[v] - window(xs[v % 5], ys[v % 5], v >= 5));
  const auto tens = model->forward(torch::stack(inputs)).softmax(1).mean(0);
  CHECK(test::relative_error(classify(model, {files[0]}, pre, InferenceOptions().ten_crop(true))[0], tens) < 1e-6);
}

TEST_CASE("A diverging loss stops training with a message naming the step", "[train]") {
  const ColourSet colours("nan", 2);
  const auto& [root, run_dir, source, stats] = colours;
  auto config = small_config(root, 3).val("");
  config.trainer().lr(1e4);
  auto run = Run::create(run_dir, config);
  CHECK_THROWS_WITH(run.fit(), Catch::Contains("the loss became") && Catch::Contains(", step ") &&
                                   Catch::Contains("lower the learning rate"));
}

TEST_CASE("Features export as .npy, neighbours, kernels and curves", "[train][visualize]") {
  const ColourSet colours("features", 3);
  const auto& [root, run, source, stats] = colours;
  auto model = small_model(6);
  const Preprocessing pre{source->classes(), stats.mean_rgb, 72, 67};
  const auto features = extract_features(model, source, pre, Layer::kFc7, InferenceOptions().batch_size(4).workers(1));
  CHECK(features.sizes() == torch::IntArrayRef({6, 4096}));
  // Row i is image i: the same as a forward pass on that image alone.
  const auto one = extract_features(model, data::open_image_files({source->describe(4)}), pre, Layer::kFc7,
                                   InferenceOptions().batch_size(1).workers(1));
  CHECK(test::relative_error(one[0], features[4]) < 1e-6);

  write_npy(features, root + "/f.npy");
  CHECK(torch::equal(read_npy(root + "/f.npy"), features));
  std::string out;
  REQUIRE(test::run("/usr/bin/python3 -c \"import numpy as np; a=np.load('" + root +
                        "/f.npy'); print(a.shape, a.dtype, float(a[4, 7]))\"",
                    out) == 0);
  std::ostringstream expected;
  expected << "(6, 4096) float32 " << features[4][7].item<float>();
  CHECK_THAT(out, Catch::StartsWith(expected.str().substr(0, 20)));
  CHECK_THAT(test::message_of([&] { read_npy(colours.root + "/0/0.png"); }), Catch::Contains("not a NumPy .npy file"));

  const auto [indices, distances] = nearest(features, features[2], 3, 2);
  CHECK(indices.size() == 3);
  CHECK(std::find(indices.begin(), indices.end(), 2) == indices.end());
  CHECK(std::is_sorted(distances.begin(), distances.end()));
  const double direct = (features[indices[0]] - features[2]).norm().item<double>();
  CHECK(distances[0] == Approx(direct).epsilon(1e-5));

  const auto grid = kernel_grid(*model, 2);
  CHECK(grid.width == 2 + 16 * (22 + 2));  // 16 kernels of 11 x 2 pixels a row
  std::vector<EpochMetrics> history(3);
  for (int i = 0; i < 3; ++i) history[i] = EpochMetrics{i + 1, 1.0 / (i + 1), 0.5, 0.9, 0.6, 0.9, 0.01, 100, 10.0 * i};
  const auto curves = plot_curves(history);
  CHECK((curves.width == 1320 && curves.height == 420));
  // The neighbours' row: each image with its caption lines under it, in ink.
  data::Image tile;
  tile.height = tile.width = 10;
  tile.channels = 3;
  tile.pixels.assign(300, 0);
  const auto row = image_row({tile, tile}, {{"query", "Ankle boot"}, {"1: d = 0.25", "Ankle boot"}}, 32);
  CHECK((row.width == 4 + 2 * (32 + 4) && row.height == 32 + 2 * 4 + 2 * 15 + 4));
  int64_t ink = 0;
  for (int64_t y = 32 + 8; y < row.height; ++y) {
    for (int64_t x = 0; x < 36; ++x) ink += row.pixels[static_cast<size_t>((y * row.width + x) * 3)] < 128;
  }
  CHECK(ink > 20);  // the query's caption is drawn
  CHECK(image_row({tile}).height == 96 + 2 * 4);  // no captions: the image and its margins only
  CHECK(test::message_of([&] { image_row({tile, tile}, {{"query"}}); }) == "image_row: 1 captions for 2 images");
  std::ofstream(root + "/metrics.jsonl") << history[0].to_json() << "\n" << history[1].to_json() << "\n";
  CHECK(read_metrics(root + "/metrics.jsonl")[1].train_loss == 0.5);
  std::ofstream(root + "/bad.jsonl") << "{\"epoch\":1}\n";
  CHECK(test::message_of([&] { read_metrics(colours.root + "/bad.jsonl"); }) ==
        "metrics '" + root + "/bad.jsonl' line 1: not an epoch's figures");
}


// The neighbours of an image query must be computed at the features' own layer: fc6
// and fc7 are both 4,096 wide, so nothing in the values tells them apart.
TEST_CASE("Features know their layer: an image query against fc6 features finds itself", "[train][visualize]") {
  const ColourSet colours("fc6", 3);
  const auto& [root, run_dir, source, stats] = colours;
  auto model = small_model(6);
  const Preprocessing pre{source->classes(), stats.mean_rgb, 72, 67};
  const auto weights = root + "/model.pt";
  CheckpointExtras extras;
  pre.add_to(extras);
  save(*model, weights, extras);
  Features features;
  features.layer = Layer::kFc6;
  features.weights = weights;
  features.values = extract_features(model, source, pre, Layer::kFc6, InferenceOptions().batch_size(4).workers(1));
  features.precision = Precision::kFp32;
  for (size_t i = 0; i < source->size(); ++i) features.images.push_back(source->describe(i));
  write_features(features, root + "/f.npy");

  const auto file = read_features(root + "/f.npy");
  CHECK(file.layer == c10::optional<Layer>(Layer::kFc6));
  CHECK(file.precision == c10::optional<Precision>(Precision::kFp32));
  CHECK(file.weights == weights);
  CHECK(file.images == features.images);
  CHECK(torch::equal(file.values, features.values));
  const auto query = features_like(file, source->describe(4));
  const auto [indices, distances] = nearest(file.values, query, 2);
  REQUIRE(indices.size() == 2);
  CHECK(indices[0] == 4);
  INFO("distance to itself " << distances[0] << ", to the next " << distances[1]);
  CHECK(distances[0] < 1e-4 * distances[1]);  // 0 but for the batch's summation order
  // What a guess from the width computed: the same image at fc7, far from its fc6 row.
  const auto fc7 = extract_features(model, data::open_image_files({source->describe(4)}), pre, Layer::kFc7,
                                    InferenceOptions().batch_size(1).workers(0))[0];
  CHECK((fc7 - file.values[4]).norm().item<double>() > 100 * distances[0]);
  // Rows computed in bf16 say so, and a query then runs in bf16 too: it finds its row
  // as closely (in float32 it would land bf16's rounding away).
  auto reduced = features;
  reduced.values = extract_features(model, source, pre, Layer::kFc6,
                                    InferenceOptions().batch_size(4).workers(1).precision(Precision::kBf16));
  reduced.precision = Precision::kBf16;
  write_features(reduced, root + "/b.npy");
  const auto bf16 = read_features(root + "/b.npy");
  const auto [near, apart] = nearest(bf16.values, features_like(bf16, source->describe(4)), 2);
  CHECK(near[0] == 4);
  const auto fp32_query = nearest(bf16.values, features_like(bf16, source->describe(4), "", Precision::kFp32), 2);
  INFO("bf16 query " << apart[0] << ", float32 query " << fp32_query.second[0]);
  CHECK(apart[0] < 1e-2 * apart[1]);
  CHECK(fp32_query.second[0] > 10 * apart[0]);

  // Another checkpoint than the features', and a file from before the layer was recorded.
  const auto other = root + "/other.pt";
  save(*small_model(7), other, extras);
  CHECK_THAT(test::message_of([&] { features_like(file, source->describe(4), other); }),
             Catch::Contains("the features are fc6 activations of '" + weights + "', not of '" + other + "'"));
  fs::remove(root + "/f.json");
  CHECK_THAT(test::message_of([&] { features_like(read_features(colours.root + "/f.npy"), colours.source->describe(4)); }),
             Catch::StartsWith("the features do not say which layer they are"));
  std::ofstream(root + "/f.json") << "{\"layer\":\"fc6\",\"weights\":\"x\",\"rows\":5,\"dimension\":4096}\n";
  CHECK_THAT(test::message_of([&] { read_features(colours.root + "/f.npy"); }),
             Catch::Contains("describes 5 x 4096 values, the file holds [6, 4096]"));
}

// Section 5's update against LibTorch's SGD (train.h says how they relate): equal at a
// constant rate; after the rate drops from lr0 to lr1 ours keeps the step already taken
// at the old rate, LibTorch rescales it, so ours moves 0.9 (1 - lr1 / lr0) v further,
// v being the last step taken.
TEST_CASE("Trainer::step equals LibTorch's SGD at a constant rate, and differs as documented after a drop",
          "[train]") {
  torch::manual_seed(31);
  const auto options = AlexNetOptions::caffe().input_size(67).num_classes(3).dropout(0.0);
  AlexNet ours(options), theirs(options);
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < ours->parameters().size(); ++i) theirs->parameters()[i].copy_(ours->parameters()[i]);
  }
  Trainer trainer(ours, TrainerOptions().lr(0.01).momentum(0.9).weight_decay(5e-4));
  torch::optim::SGD sgd(theirs->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(5e-4));
  theirs->train();
  auto sgd_step = [&](const torch::Tensor& x, const torch::Tensor& y) {
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(theirs->forward(x), y).backward();
    sgd.step();
  };
  std::vector<torch::Tensor> before;
  for (int step = 0; step < 4; ++step) {
    const auto x = torch::randn({4, 3, 67, 67}) * 40;
    const auto y = torch::randint(0, 3, {4});
    before = test::snapshot(*ours);
    const auto result = trainer.step(x, y);
    CHECK(result.updated);
    CHECK(std::isfinite(result.loss));
    sgd_step(x, y);
  }
  double worst = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    worst = std::max(worst, test::relative_error(ours->parameters()[i], theirs->parameters()[i]));
  }
  INFO("after 4 steps at lr 0.01, worst parameter relative error " << worst);
  CHECK(worst < 6e-6);  // docs/training.md's figure is 6e-7

  std::vector<torch::Tensor> velocity;
  for (size_t i = 0; i < before.size(); ++i) velocity.push_back(ours->parameters()[i].detach() - before[i]);
  trainer.set_lr(0.001);
  for (auto& group : sgd.param_groups()) static_cast<torch::optim::SGDOptions&>(group.options()).lr(0.001);
  const auto x = torch::randn({4, 3, 67, 67}) * 40;
  const auto y = torch::randint(0, 3, {4});
  trainer.step(x, y);
  sgd_step(x, y);
  double documented = 0, plain = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    const auto difference = ours->parameters()[i].detach() - theirs->parameters()[i].detach();
    documented = std::max(documented, test::relative_error(difference, 0.9 * (1 - 0.1) * velocity[i]));
    plain = std::max(plain, test::relative_error(ours->parameters()[i], theirs->parameters()[i]));
  }
  INFO("after the drop: ours - LibTorch's vs 0.81 v, worst relative error " << documented << "; the two differ by "
                                                                            << plain);
  CHECK(plain > 1e-6);        // they do differ
  CHECK(documented < 1e-2);   // exactly by the paper's momentum kept at the old rate
  CHECK_THROWS_WITH(trainer.set_lr(0), "lr must be positive, got 0");
}

TEST_CASE("A loss flat at ln(classes) is reported once, after 100 steps", "[train]") {
  torch::manual_seed(32);
  AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(4).dropout(0.0));
  {
    // fc8 all zeros: every logit is 0, the loss exactly ln(4), and a tiny rate keeps it there.
    torch::NoGradGuard no_grad;
    for (auto* tower : {model->tower0.get(), model->tower1.get()}) {
      tower->fc8->weight.zero_();
      tower->fc8->bias.zero_();
    }
  }
  Trainer trainer(model, TrainerOptions().lr(1e-12).weight_decay(0));
  std::vector<std::pair<int, std::string>> warnings;
  const auto x = torch::randn({2, 3, 67, 67});
  const auto y = torch::tensor({0, 1});
  for (int step = 1; step <= 120; ++step) {
    const auto result = trainer.step(x, y);
    CHECK(result.loss == Approx(std::log(4.0)).epsilon(1e-6));
    if (!result.warning.empty()) warnings.emplace_back(step, result.warning);
  }
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].first == 100);
  CHECK_THAT(warnings[0].second, Catch::StartsWith("the loss has sat at ln(4) = 1.38629 for 100 steps: the network is "
                                                   "not learning"));
}

TEST_CASE("The mean image is subtracted at each crop's window, mirrored with it", "[train][data]") {
  const ColourSet colours("mean-image", 3);
  const auto& [root, run, source, stats] = colours;
  const auto pre = Preprocessing::from_statistics(source->classes(), Mean::kImage, stats.mean_image, stats.mean_rgb, 72, 67);
  REQUIRE(pre.mean_image.sizes() == torch::IntArrayRef({3, 72, 72}));
  // The statistics' mean image, directly: every image at 72 x 72, averaged.
  auto sum = torch::zeros({3, 72, 72}, torch::kDouble);
  for (size_t i = 0; i < source->size(); ++i) {
    const auto image = data::to_rgb(source->image(i, 72));
    sum += torch::from_blob(const_cast<uint8_t*>(image.pixels.data()), {72, 72, 3}, torch::kUInt8)
               .permute({2, 0, 1})
               .to(torch::kDouble);
  }
  CHECK(test::relative_error(pre.mean_image, sum / static_cast<double>(source->size())) < 1e-6);
  for (const auto mode : {data::Mode::kTrain, data::Mode::kTenCrop}) {
    INFO("mode " << name_of(mode));
    data::ImageDataset dataset(source, data::TransformOptions().resize(72).crop(67).mode(mode).pca_std(0.1).seed(3),
                               stats);
    const auto batch = dataset.get_batch({0, 1, 2, 3, 4, 5});
    const auto x = data::normalize(batch, pre, torch::kCPU);
    const auto views = mode == data::Mode::kTenCrop ? 10 : 1;
    REQUIRE(batch.windows.size(0) == 6 * views);
    int flipped = 0;
    for (int64_t row = 0; row < 6 * views; ++row) {
      const auto w = batch.windows[row];
      const auto y0 = w[0].item<int64_t>(), x0 = w[1].item<int64_t>();
      const bool flip = w[2].item<int64_t>() != 0;
      flipped += flip;
      // Directly: the image at 72, cut at the window, mirrored, minus the mean image cut the same way.
      const auto image = data::to_rgb(source->image(batch.indices[static_cast<size_t>(row / views)], 72));
      auto pixels = torch::from_blob(const_cast<uint8_t*>(image.pixels.data()), {72, 72, 3}, torch::kUInt8)
                        .permute({2, 0, 1})
                        .to(torch::kFloat);
      auto expected = (pixels - pre.mean_image).narrow(1, y0, 67).narrow(2, x0, 67);
      if (flip) expected = expected.flip(2);
      expected = expected + batch.colour[row].view({3, 1, 1});
      CHECK(test::relative_error(x[row], expected) < 1e-6);
    }
    CHECK(flipped > 0);
  }
  // The checkpoint carries it, and inference subtracts it at the centre.
  CheckpointExtras extras;
  pre.add_to(extras);
  const auto again = Preprocessing::from(extras, "memory");
  CHECK(again.mean == Mean::kImage);
  CHECK(torch::equal(again.mean_image, pre.mean_image));
}

TEST_CASE("Curves are ticked at round numbers", "[train][visualize]") {
  using alexnet::detail::axis_ticks;
  using alexnet::detail::log_axis_ticks;
  CHECK(axis_ticks(0.00562, 0.963) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1});
  CHECK(axis_ticks(0, 2.3) == std::vector<double>{0, 0.5, 1, 1.5, 2, 2.5});
  CHECK(axis_ticks(0.642, 0.963) == std::vector<double>{0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1});
  CHECK(log_axis_ticks(0.00562, 0.963) == std::vector<double>{0.001, 0.01, 0.1, 1});
  CHECK(log_axis_ticks(0.001, 0.01) == std::vector<double>{0.001, 0.002, 0.005, 0.01});
  CHECK(log_axis_ticks(0.0007, 0.012) == std::vector<double>{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02});
}
