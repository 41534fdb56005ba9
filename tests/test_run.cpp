// A run as a library: created, stopped, resumed (with the library alone), changed at a
// resume or refused, and run folders from before checkpoints held their configuration.

#include "fixtures.h"
#include "helpers.h"

#include <alexnet/inference.h>
#include <alexnet/run.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>

using namespace alexnet;
namespace fs = std::filesystem;

namespace {

RunConfig small_config(const std::string& data, int64_t epochs) {
  RunConfig config;
  config.data(data).val(data).arch("caffe").input_size(67).dropout(0.0);
  config.train().epochs(epochs).batch_size(4).lr(0.001).workers(1).resize(72).seed(5);
  return config;
}

}  // namespace

TEST_CASE("A run stops, resumes with more epochs, keeps them for the next resume, and equals an uninterrupted one",
          "[train][run]") {
  const auto data = test::make_colours("run-data", 6);
  const auto dir = test::temp_dir("run") + "/a";
  const auto straight_dir = test::temp_dir("run-straight") + "/b";

  Run::prepare(straight_dir, small_config(data, 2), false);
  Run straight(straight_dir, small_config(data, 2), false);
  REQUIRE(straight.fit() == Trainer::Outcome::kFinished);

  Run::prepare(dir, small_config(data, 1), false);
  {
    Run run(dir, small_config(data, 1), false);
    REQUIRE(run.fit() == Trainer::Outcome::kFinished);
    CHECK(run.trainer().history().size() == 1);
  }
  for (const char* file : {"last.pt", "best.pt", "metrics.jsonl", "stats.pt", "options.txt"}) {
    CHECK(fs::exists(dir + "/" + file));
  }
  CHECK_THROWS_AS(Run::prepare(dir, small_config(data, 1), false), RunExists);

  // More epochs, then a stop during the second: what `train --resume RUN --epochs 2`
  // and Ctrl-C do.
  RunConfig given;
  given.train().epochs(2).workers(2);
  std::vector<std::string> changes;
  const auto more = Run::resume_config(dir, given, {"epochs", "workers"}, false, &changes);
  CHECK(changes == std::vector<std::string>{"epochs 1 -> 2", "workers 1 -> 2"});
  CHECK(more.train().batch_size() == 4);  // the rest from the run
  CHECK(more.data() == data);
  {
    std::atomic<bool> stop{false};
    TrainHooks hooks;
    hooks.stop = &stop;
    hooks.on_step = [&](int64_t, int64_t step, int64_t, double, double) { stop = step == 1; };
    Run run(dir, more, true, nullptr, hooks);
    CHECK(run.trainer().epochs_done() == 1);
    REQUIRE(run.fit() == Trainer::Outcome::kStopped);
  }
  // A plain resume keeps the changed epochs.
  const auto plain = Run::resume_config(dir, RunConfig(), {});
  CHECK(plain.train().epochs() == 2);
  CHECK(plain.train().workers() == 2);
  {
    Run run(dir, plain, true);
    REQUIRE(run.fit() == Trainer::Outcome::kFinished);
    CHECK(run.trainer().history().size() == 2);
    CHECK(test::same(test::snapshot(*run.trainer().model()), test::snapshot(*straight.trainer().model())));
  }
  // best.pt is for inference: weights and preprocessing, no optimizer state.
  const auto best = read_extras(dir + "/best.pt");
  const auto last = read_extras(dir + "/last.pt");
  auto has = [](const CheckpointExtras& e, const std::string& prefix) {
    for (const auto& [key, value] : e.tensors) {
      if (key.rfind(prefix, 0) == 0) return true;
    }
    return e.strings.count(prefix) > 0;
  };
  CHECK_FALSE(has(best, "momentum/"));
  CHECK_FALSE(has(best, "train/progress"));
  CHECK(has(last, "momentum/"));
  CHECK(has(last, "train/progress"));
  CHECK(has(last, "run/config"));
  const auto [model, pre] = load_for_inference(dir + "/best.pt");
  CHECK(pre.mean == Mean::kImage);  // the caffe preset's default (Section 2)
  CHECK(pre.classes == std::vector<std::string>{"0", "1"});

  // A change that makes the run differ from an uninterrupted one is refused by name...
  RunConfig bigger;
  bigger.train().batch_size(8);
  CHECK_THROWS_WITH(Run::resume_config(dir, bigger, {"batch_size"}),
                    "batch_size is '4' in run '" + dir + "' and '8' now: the run would differ from an uninterrupted one");
  CHECK_THROWS_AS(Run::resume_config(dir, bigger, {"batch_size"}), ChangeRefused);
  // ... unless allowed; the rest of `given` is ignored when not named.
  changes.clear();
  const auto allowed = Run::resume_config(dir, bigger, {"batch_size"}, true, &changes);
  CHECK(changes == std::vector<std::string>{"batch_size 4 -> 8"});
  CHECK(allowed.train().epochs() == 2);
  CHECK(allowed.train().lr() == 0.001);
}

TEST_CASE("Run folders from before checkpoints held their configuration still resume", "[train][run]") {
  const auto data = test::make_colours("old-run-data", 4);
  const auto dir = test::temp_dir("old-run") + "/a";
  auto config = small_config(data, 1);
  config.train().mean(Mean::kChannels);  // what those runs subtracted
  Run::prepare(dir, config, false);
  {
    Run run(dir, config, false);
    REQUIRE(run.fit() == Trainer::Outcome::kFinished);
  }
  // last.pt as those versions wrote it: no configuration, the nine numbers of the
  // training state in a row, channel means only; and their options.txt.
  CheckpointExtras extras;
  auto model = load(dir + "/last.pt", {c10::Device(c10::kCPU)}, &extras);
  std::vector<double> state;
  for (const char* key : {"epoch", "step", "best_error", "bad_epochs", "loss_sum", "correct", "seen", "seconds", "lr"}) {
    std::smatch m;
    REQUIRE(std::regex_search(extras.strings.at("train/progress"), m, std::regex("\"" + std::string(key) + "\":([-0-9.e]+)")));
    state.push_back(std::stod(m[1].str()));
  }
  extras.tensors["train/state"] = torch::tensor(state, torch::kDouble);
  extras.strings.erase("train/progress");
  extras.strings.erase("run/config");
  extras.strings["preprocessing"] = "resize=72\ncrop=67\n";
  save(*model, dir + "/last.pt", extras);
  std::ofstream(dir + "/options.txt") << "arch=caffe\nbatch-size=4\nchannels-last=0\ndata=" << data
                                      << "\ndevices=cpu\ndropout=0.000000\nepochs=1\nexecution=grouped\ninit=\n"
                                         "input-size=67\nlr=0.001000\nlr-policy=plateau\nmomentum=0.900000\n"
                                         "patience=1\npca-std=0.100000\nprecision=fp32\nresize=72\nseed=5\n"
                                         "skip-bad=0\nstats=\nstep-epochs=30\nten-crop=0\ntf32=0\nval="
                                      << data << "\nweight-decay=0.000500\nworkers=1\n";
  RunConfig given;
  given.train().epochs(2);
  const auto resumed = Run::resume_config(dir, given, {"epochs"});
  CHECK(resumed.train().batch_size() == 4);
  CHECK(resumed.train().mean() == c10::optional<Mean>(Mean::kChannels));
  CHECK(resumed.train().on_error() == data::OnError::kFail);
  Run run(dir, resumed, true);
  CHECK(run.trainer().epochs_done() == 1);
  REQUIRE(run.fit() == Trainer::Outcome::kFinished);
  CHECK(run.trainer().history().size() == 2);
  // Written back in today's form: the next resume reads it from last.pt.
  CHECK(read_extras(dir + "/last.pt").strings.count("run/config") == 1);
}

TEST_CASE("A run checks its settings before reading any data", "[train][run]") {
  const auto data = test::make_colours("run-check", 2);
  const auto dir = test::temp_dir("run-check-out") + "/a";
  auto config = small_config(data, 1);
  config.input_size(60);
  CHECK_THROWS_WITH(Run::prepare(dir, config, false), Catch::Contains("input size 60") && Catch::Contains("too small"));
  config.input_size(80);
  CHECK_THROWS_WITH(Run::prepare(dir, config, false),
                    "input_size 80 is larger than resize 72: the crop must fit the resized image");
  config.input_size(67).train().batch_size(0);
  CHECK_THROWS_WITH(Run::prepare(dir, config, false), "batch_size must be positive, got 0");
  CHECK_THROWS_AS(Run::prepare(dir, config, false), OptionError);
  config.train().batch_size(4);
  config.data(data + "/nowhere");
  CHECK_THROWS_WITH(Run::prepare(dir, config, false), "data '" + data + "/nowhere' does not exist");
  CHECK_FALSE(fs::exists(dir));  // nothing made
  CHECK_THROWS_WITH(RunConfig().set("precision", "fp8"), "precision takes one of fp32, bf16, fp16, got 'fp8'");
  CHECK_THROWS_WITH(RunConfig().set("epochs", "ten"), "epochs takes a whole number, got 'ten'");
  // Every setting survives its JSON.
  auto every = small_config(data, 3);
  every.init(Init::kPaper).devices({c10::Device("cpu")}).execution(Execution::kTowers);
  every.train().precision(Precision::kBf16).mean(Mean::kChannels).ten_crop(true).on_error(data::OnError::kSkip);
  CHECK(RunConfig::from_json(every.to_json()).to_json() == every.to_json());
  for (const auto& setting : RunConfig::settings()) {
    CHECK(RunConfig::from_json(every.to_json()).get(setting.name) == every.get(setting.name));
    CHECK_FALSE(setting.help.empty());
  }
}
