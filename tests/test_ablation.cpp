// The paper's claims measured (alexnet/train/ablation.h): every variant builds, trains,
// stops and continues, and the report's figures are the runs' own.

#include "fixtures.h"
#include "helpers.h"

#include <alexnet/network/error.h>
#include <alexnet/train/ablation.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>

using namespace alexnet;
namespace fs = std::filesystem;

namespace {

AblationOptions tiny(const std::string& data, int64_t epochs) {
  RunConfig config;
  config.data(data).val(data).arch("caffe").init(Init::kCaffe).input_size(67);
  config.train().epochs(epochs).batch_size(4).workers(1).resize(72);
  config.trainer().lr(0.001);
  return AblationOptions().config(config).seeds({1, 2});
}

const VariantResult& result(const AblationReport& report, const std::string& name) {
  for (const auto& v : report.variants) {
    if (v.variant.name == name) return v;
  }
  FAIL("no variant " << name << " in the report");
  throw;
}

}  // namespace

TEST_CASE("ablate trains every variant, stops, continues, and reports the runs' own figures", "[train][ablation]") {
  const auto data = test::make_colours("ablation-colours", 4);
  const auto dir = test::temp_dir("ablation") + "/study";
  auto options = tiny(data, 1);

  // Stopped in its third run (the stop flag, as Ctrl-C sets it)...
  std::atomic<bool> stop{false};
  int steps = 0;
  TrainHooks hooks;
  hooks.on_step = [&](int64_t, int64_t, int64_t, double, double) {
    if (++steps == 5) stop = true;
  };
  hooks.stop = &stop;
  REQUIRE(ablate(dir, AblationOptions(options).hooks(hooks)) == Run::Outcome::kStopped);
  CHECK(fs::exists(dir + "/runs/paper-seed1/last.pt"));
  CHECK(fs::exists(dir + "/runs/one_tower-seed1/last.pt"));  // where it stopped
  CHECK_FALSE(fs::exists(dir + "/runs/no_lrn-seed1"));
  // ... and continued: every variant of every seed, each run as the variant says.
  std::vector<std::string> said;
  options.hooks().on_info = [&](const std::string& text) { said.push_back(text); };
  REQUIRE(ablate(dir, options) == Run::Outcome::kFinished);
  CHECK(std::count(said.begin(), said.end(), "continuing the study in " + dir) == 1);
  const auto tanh = Run::config_of(dir + "/runs/tanh-seed2");
  CHECK(tanh.activation() == Activation::kTanh);
  CHECK(tanh.train().seed() == 2);
  CHECK(Run::config_of(dir + "/runs/one_tower-seed1").towers() == 1);
  CHECK_FALSE(Run::config_of(dir + "/runs/no_lrn-seed1").lrn());
  CHECK(Run::config_of(dir + "/runs/pool_2x2-seed1").pool_size() == 2);
  CHECK_FALSE(Run::config_of(dir + "/runs/centre_crop-seed1").train().random_crops());
  CHECK(Run::config_of(dir + "/runs/no_pca-seed1").train().pca_std() == 0);
  CHECK(Run::config_of(dir + "/runs/no_dropout-seed1").dropout() == 0);
  CHECK(Run::config_of(dir + "/runs/paper-seed1").stats() == dir + "/stats.pt");  // one set of statistics

  // The report: each figure from the run's metrics, the differences paired by seed.
  const auto report = ablation_report(dir, options.threshold(0.45));
  REQUIRE(report.variants.size() == paper_variants().size());
  CHECK(report.variants.front().variant.name == "paper");
  const auto& paper = result(report, "paper");
  for (const auto& v : report.variants) {
    INFO(v.variant.name);
    REQUIRE(v.seeds == std::vector<int64_t>{1, 2});
    for (size_t i = 0; i < 2; ++i) {
      const auto metrics = read_metrics(dir + "/runs/" + v.variant.name + "-seed" + std::to_string(v.seeds[i]) +
                                        "/metrics.jsonl");
      REQUIRE(metrics.size() == 1);
      CHECK(v.top1[i] == Approx(1 - metrics[0].val_top1));
      CHECK(v.gap[i] == Approx(metrics[0].train_top1 - metrics[0].val_top1));
      // Figure 1's measure: from chance (two classes: 0.5) at epoch 0, linearly to epoch 1.
      const double e = 1 - metrics[0].train_top1;
      if (e <= 0.45) {
        CHECK(v.epochs_to_threshold[i] == Approx((0.5 - 0.45) / (0.5 - e)));
      } else {
        CHECK(std::isnan(v.epochs_to_threshold[i]));
      }
      if (v.variant.name != "paper") CHECK(v.delta_top1[i] == Approx(v.top1[i] - paper.top1[i]));
    }
  }
  // A threshold above chance is reached before training starts.
  for (const auto& v : ablation_report(dir, options.threshold(0.7)).variants) {
    CHECK(v.epochs_to_threshold == std::vector<double>{0.0, 0.0});
  }
  const auto files = write_ablation_report(dir, report);
  CHECK(files.size() == 4);
  for (const auto& f : files) CHECK(fs::file_size(f) > 100);
  const auto table = test::read_text(dir + "/ablation.md");
  for (const auto& v : paper_variants()) CHECK_THAT(table, Catch::Contains("| " + v.name + " |"));
}

TEST_CASE("A study continues only as it started, may grow, and refuses what it cannot compare", "[train][ablation]") {
  const auto data = test::make_colours("ablation-refusals-colours", 4);
  const auto dir = test::temp_dir("ablation-refusals") + "/study";
  auto options = tiny(data, 1).seeds({3}).variants({"no_pca", "tanh"});
  // pca_std 0 for every run makes no_pca the paper's network: left out, and said.
  options.config().train().pca_std(0);
  std::vector<std::string> said;
  options.hooks().on_info = [&](const std::string& text) { said.push_back(text); };
  REQUIRE(ablate(dir, options) == Run::Outcome::kFinished);
  CHECK(std::count(said.begin(), said.end(),
                   "variant no_pca (no PCA colour noise) is the paper's network with these settings: left out") == 1);
  CHECK(fs::exists(dir + "/runs/tanh-seed3/best.pt"));
  CHECK_FALSE(fs::exists(dir + "/runs/no_pca-seed3"));
  CHECK(AblationOptions::stored(dir).variants() == std::vector<std::string>{"no_pca", "tanh"});

  // What the runs compute may not change; how they run may.
  auto changed = options;
  changed.config().trainer().lr(0.01);
  CHECK(test::message_of([&] { ablate(dir, changed); }) ==
        "lr was 0.001 in the study '" + dir + "', now 0.01: use another folder for another study");
  // Extended: every run trains on to the new epochs.
  auto longer = options;
  longer.config().train().epochs(2).workers(0);
  REQUIRE(ablate(dir, longer) == Run::Outcome::kFinished);
  CHECK(read_metrics(dir + "/runs/tanh-seed3/metrics.jsonl").size() == 2);
  CHECK(read_metrics(dir + "/runs/paper-seed3/metrics.jsonl").size() == 2);
  CHECK(test::message_of([&] { ablate(dir, options); }) ==
        "epochs was 2 in the study '" + dir + "', now 1: a study can be extended, not shortened");

  // Nothing to compare without validation data, a seed twice, a variant that is not the paper's.
  const auto fresh = test::temp_dir("ablation-refusals") + "/other";
  auto no_val = tiny(data, 1);
  no_val.config().val("");
  CHECK(test::message_of([&] { ablate(fresh, no_val); }) ==
        "val is needed: the study compares validation errors (give a validation set)");
  CHECK(test::message_of([&] { ablate(fresh, tiny(data, 1).seeds({1, 1})); }) == "seeds names a seed twice");
  CHECK_THAT(test::message_of([&] { ablate(fresh, tiny(data, 1).variants({"sigmoid"})); }),
             Catch::StartsWith("variants has no variant 'sigmoid' (the paper's: paper, tanh, one_tower,"));
  CHECK_FALSE(fs::exists(fresh));  // refused before anything was made
  // A folder of other files is not taken for a study.
  fs::create_directories(fresh);
  std::ofstream(fresh + "/notes.txt") << "mine\n";
  CHECK(test::message_of([&] { ablate(fresh, tiny(data, 1)); }) ==
        "'" + fresh + "' holds files but no study (no ablation.json): give a new or empty folder");
  CHECK(test::read_text(fresh + "/notes.txt") == "mine\n");
}
