// Loading for inference (one read, no initialisation, bf16 straight from the file),
// bf16 inference against float32, and the training loop's batches without workers.
#include "fixtures.h"
#include "helpers.h"

#include <alexnet/data/dataset.h>
#include <alexnet/data/statistics.h>
#include <alexnet/network/checkpoint.h>
#include <alexnet/network/error.h>
#include <alexnet/train/inference.h>
#include <alexnet/train/run.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

using namespace alexnet;
using alexnet::test::make_colours;
namespace fs = std::filesystem;

namespace {

// Resets the peak resident set to the current one (Linux 4.0+); false where refused.
bool reset_peak() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return clear.good();
}

// The growth of the peak resident set while `f` runs, in bytes; -1 where it cannot be told.
template <typename F>
int64_t peak_growth(F f) {
  if (!reset_peak()) return -1;
  const auto before = test::memory_status("VmRSS");
  f();
  return test::memory_status("VmHWM") - before;
}

int64_t parameter_bytes(const AlexNetImpl& model) {
  int64_t bytes = 0;
  for (const auto& p : model.parameters()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  return bytes;
}

// A two-tower network at input 67 (about 88 MB of float32 weights), its convolutions'
// weights channels-last as bf16 training leaves them, saved with preprocessing.
struct Saved {
  std::string dir = test::temp_dir("load-inference"), path = dir + "/model.pt";
  AlexNet model{nullptr};
  Saved() {
    torch::manual_seed(3);
    model = AlexNet(AlexNetOptions::caffe().input_size(67).num_classes(10));
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
    }
    CheckpointExtras extras;
    Preprocessing pre;
    pre.classes = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    pre.mean = Mean::kChannels;
    pre.mean_rgb = torch::tensor({120.0, 110.0, 100.0}, torch::kDouble);
    pre.resize = 72;
    pre.crop = 67;
    pre.add_to(extras);
    save(*model, path, extras);
  }
  ~Saved() { fs::remove_all(dir); }
};

}  // namespace

TEST_CASE("A checkpoint loads without a random initialisation, its file read into the parameters once",
          "[checkpoint][inference]") {
  const Saved saved;
  // No random number is drawn: a network initialised before its weights are read
  // would draw 22 million.
  torch::manual_seed(7);
  const auto expected = torch::rand({8});
  torch::manual_seed(7);
  auto loaded = load(saved.path);
  CHECK(torch::equal(torch::rand({8}), expected));
  // Every parameter bitwise the file's, laid out as a network built here is.
  CHECK(test::same(test::snapshot(*loaded), test::snapshot(*saved.model)));
  for (const auto& p : loaded->parameters()) CHECK(p.is_contiguous());

  // One copy of the weights at the peak: an initialised network that the file then
  // overwrites, or the whole file read before the parameters, holds two.
  const auto weights = parameter_bytes(*saved.model);
  const auto fp32 = peak_growth([&] { (void)load(saved.path); });
  // In bf16 half of one: the float32 weights never held whole.
  const auto bf16 = peak_growth([&] { (void)load_for_inference(saved.path, Precision::kBf16); });
  if (fp32 < 0) {
    WARN("peak memory not checked: /proc/self/clear_refs cannot be written here");
  } else {
    INFO("weights " << weights << " bytes; peak growth fp32 " << fp32 << ", bf16 " << bf16);
    CHECK(fp32 < weights * 5 / 4);
    CHECK(bf16 < weights * 5 / 8);
  }

  // bf16: each weight is the file's rounded to bf16, the convolutions' channels-last.
  auto [bf16_model, pre] = load_for_inference(saved.path, Precision::kBf16);
  CHECK_FALSE(bf16_model->is_training());
  CHECK(pre.classes.size() == 10);
  const auto original = saved.model->named_parameters();
  for (const auto& p : bf16_model->named_parameters()) {
    INFO(p.key());
    CHECK(p.value().scalar_type() == torch::kBFloat16);
    CHECK(p.value().is_contiguous(p.value().dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    CHECK(torch::equal(p.value(), original[p.key()].to(torch::kBFloat16)));
  }
  CHECK(test::message_of([&] { (void)load_for_inference(saved.path, Precision::kFp16); }) ==
        "precision fp16 needs a CUDA device; on CPUs use bf16");
}

TEST_CASE("A damaged weight is refused when it is read, naming its record", "[checkpoint][inference]") {
  const Saved saved;
  // fc7's weight is the largest record: a byte flipped in the middle of the file.
  const auto damaged = saved.dir + "/damaged.pt";
  fs::copy_file(saved.path, damaged);
  {
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    const auto middle = static_cast<std::streamoff>(fs::file_size(damaged) / 2);
    f.seekg(middle);
    const char byte = static_cast<char>(f.get() ^ 0x01);
    f.seekp(middle);
    f.put(byte);
  }
  for (const auto precision : {Precision::kFp32, Precision::kBf16}) {
    CHECK_THAT(test::message_of([&] { (void)load_for_inference(damaged, precision); }),
               Catch::StartsWith("checkpoint '" + damaged + "': not a readable checkpoint (a damaged or truncated zip "
                                 "archive (entry 'archive/data/") &&
                   Catch::EndsWith("' fails its CRC-32 check))"));
  }
}

TEST_CASE("bf16 inference agrees with float32 within its rounding, and outputs float32", "[inference][precision]") {
  const std::string root = make_colours("bf16-inference", 6);
  const auto source = data::open_image_folder(root);
  const auto stats = data::compute_statistics(*source, 72, 1);
  torch::manual_seed(5);
  AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(2));
  const Preprocessing pre{source->classes(), stats.mean_rgb, 72, 67};
  const auto fp32 = extract_features(model, source, pre, Layer::kLogits, InferenceOptions().workers(0));
  const auto bf16 = extract_features(model, source, pre, Layer::kLogits,
                                     InferenceOptions().workers(0).precision(Precision::kBf16));
  REQUIRE(fp32.size(0) == 12);
  CHECK(bf16.scalar_type() == torch::kFloat);
  const double error = test::relative_error(bf16, fp32);
  INFO("relative error of bf16 logits: " << error);
  // bf16 keeps 8 bits of mantissa: the logits move by about 1e-3 of their size, never
  // by nothing (a bf16 request that ran in float32 would give 0).
  CHECK(error > 1e-5);
  CHECK(error < 2e-2);
  // Where float32 is sure (a margin of 10% of the logits' spread), bf16 agrees.
  const auto margin = (fp32.select(1, 0) - fp32.select(1, 1)).abs();
  const auto sure = margin > 0.1 * (fp32.max() - fp32.min());
  CHECK(sure.any().item<bool>());
  CHECK(torch::equal(fp32.argmax(1).masked_select(sure), bf16.argmax(1).masked_select(sure)));

  // A model whose weights are bf16 infers in bf16, and says so when asked for fp32.
  const auto dir = test::temp_dir("bf16-weights");
  CheckpointExtras extras;
  pre.add_to(extras);
  save(*model, dir + "/model.pt", extras);
  auto [reduced, reduced_pre] = load_for_inference(dir + "/model.pt", Precision::kBf16);
  const auto from_bf16_weights = extract_features(reduced, source, reduced_pre, Layer::kLogits,
                                                  InferenceOptions().workers(0).precision(Precision::kBf16));
  CHECK(test::relative_error(from_bf16_weights, fp32) < 2e-2);
  CHECK(test::message_of([&] { (void)extract_features(reduced, source, reduced_pre, Layer::kLogits, {}); }) ==
        "precision fp32 asked, but the model's weights are stored in bf16 (load it at the precision it infers in)");
  const auto probabilities = classify(reduced, {source->describe(0)}, reduced_pre,
                                      InferenceOptions().precision(Precision::kBf16));
  CHECK(probabilities.scalar_type() == torch::kFloat);
  CHECK(probabilities.sum().item<double>() == Approx(1.0));
  fs::remove_all(dir);
  fs::remove_all(root);
}

TEST_CASE("Training without loader threads takes every batch", "[train][run]") {
  // LibTorch's loader queued a batch for workers that did not exist: with --workers 0
  // the first batch of every epoch was lost (one batch of eight images: no step).
  const std::string root = make_colours("workers-0", 4);
  std::vector<std::vector<at::Tensor>> weights;
  for (const int64_t workers : {0, 2}) {
    const auto dir = root + "-run" + std::to_string(workers);
    RunConfig config;
    config.data(root).arch("caffe").input_size(67).dropout(0.0);
    config.train().epochs(1).batch_size(8).workers(workers).resize(72).seed(5);
    config.trainer().lr(0.001);
    auto run = Run::create(dir, config);
    REQUIRE(run.fit() == Run::Outcome::kFinished);
    REQUIRE(run.history().size() == 1);
    INFO("workers " << workers);
    CHECK(std::isfinite(run.history()[0].train_loss));
    weights.push_back(test::snapshot(*load(dir + "/last.pt")));
    fs::remove_all(dir);
  }
  CHECK(test::same(weights[0], weights[1]));
  fs::remove_all(root);
}
