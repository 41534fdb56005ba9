// A run as a library: created, stopped, resumed (with the library alone), changed at a
// resume or refused, undone when it cannot start, and run folders and checkpoints from
// before today's format.

#include "fixtures.h"
#include "helpers.h"

#include <alexnet/train/inference.h>
#include <alexnet/train/run.h>

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/error.h>
#include <alexnet/network/precision.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sys/wait.h>
#include <unistd.h>

using namespace alexnet;
namespace fs = std::filesystem;

namespace {

RunConfig small_config(const std::string& data, int64_t epochs) {
  RunConfig config;
  config.data(data).val(data).arch("caffe").input_size(67).dropout(0.0);
  config.train().epochs(epochs).batch_size(4).workers(1).resize(72).seed(5);
  config.trainer().lr(0.001);
  return config;
}

// A number field of a JSON record, read the way a person would check it.
double field(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\":([-0-9.e+]+)"))) {
    throw std::runtime_error("no field '" + key + "' in " + json);
  }
  return std::stod(m[1].str());
}

// Decompresses a gzip file (a fixture) to `to`.
void gunzip(const std::string& from, const std::string& to) {
  gzFile in = gzopen(from.c_str(), "rb");
  REQUIRE(in != nullptr);
  std::ofstream out(to, std::ios::binary);
  std::vector<char> buffer(1 << 20);
  int n = 0;
  while ((n = gzread(in, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) out.write(buffer.data(), n);
  gzclose(in);
  REQUIRE(n == 0);
}

}  // namespace

TEST_CASE("A run stops, resumes with more epochs, keeps them for the next resume, and equals an uninterrupted one",
          "[train][run]") {
  const auto data = test::make_colours("run-data", 6);
  const auto dir = test::temp_dir("run") + "/a";
  const auto straight_dir = test::temp_dir("run-straight") + "/b";

  auto straight = Run::create(straight_dir, small_config(data, 2));
  REQUIRE(straight.fit() == Run::Outcome::kFinished);

  {
    auto run = Run::create(dir, small_config(data, 1));
    REQUIRE(run.fit() == Run::Outcome::kFinished);
    CHECK(run.history().size() == 1);
  }
  for (const char* file : {"last.pt", "best.pt", "metrics.jsonl", "stats.pt", "options.txt"}) {
    CHECK(fs::exists(dir + "/" + file));
  }
  CHECK_THROWS_AS(Run::create(dir, small_config(data, 1)), RunExists);
  CHECK(fs::exists(dir + "/last.pt"));  // refused: nothing touched

  // More epochs, then a stop during the second: what `train --resume RUN --epochs 2`
  // and Ctrl-C do.
  {
    std::atomic<bool> stop{false};
    TrainHooks hooks;
    hooks.stop = &stop;
    hooks.on_step = [&](int64_t, int64_t step, int64_t, double, double) { stop = step == 1; };
    auto run = Run::resume(dir, [](RunConfig& c) { c.train().epochs(2).workers(2); }, RunOptions().hooks(hooks));
    CHECK(run.changes() == std::vector<std::string>{"epochs 1 -> 2", "workers 1 -> 2"});
    CHECK(run.config().train().batch_size() == 4);  // the rest from the run
    CHECK(run.config().data() == data);
    CHECK(run.trainer().epoch() == 1);
    REQUIRE(run.fit() == Run::Outcome::kStopped);
  }
  // A plain resume keeps the changed epochs.
  const auto plain = Run::config_of(dir);
  CHECK(plain.train().epochs() == 2);
  CHECK(plain.train().workers() == 2);
  {
    auto run = Run::resume(dir);
    CHECK(run.changes().empty());
    REQUIRE(run.fit() == Run::Outcome::kFinished);
    CHECK(run.history().size() == 2);
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
  CHECK_FALSE(has(best, "run/progress"));
  CHECK_FALSE(has(best, "trainer"));
  CHECK(has(last, "momentum/"));
  CHECK(has(last, "run/progress"));
  CHECK(has(last, "trainer"));
  CHECK(has(last, "run/config"));
  const auto [model, pre] = load_for_inference(dir + "/best.pt");
  CHECK(pre.mean == Mean::kImage);  // the caffe preset's default (Section 2)
  CHECK(pre.classes == std::vector<std::string>{"0", "1"});

  // A change that makes the run differ from an uninterrupted one is refused by name...
  auto bigger = [](RunConfig& c) { c.train().batch_size(8); };
  CHECK_THROWS_WITH(Run::resume(dir, bigger),
                    "batch_size is '4' in run '" + dir + "' and '8' now: the run would differ from an uninterrupted one");
  CHECK_THROWS_AS(Run::resume(dir, bigger), ChangeRefused);
  // ... unless allowed; what the edit does not touch stays the run's.
  auto allowed = Run::resume(dir, bigger, RunOptions().allow_changes(true));
  CHECK(allowed.changes() == std::vector<std::string>{"batch_size 4 -> 8"});
  CHECK(allowed.config().train().epochs() == 2);
  CHECK(allowed.config().trainer().lr() == 0.001);
  CHECK(Run::config_of(dir).train().batch_size() == 8);  // written back at once
}

TEST_CASE("Run folders from before checkpoints held their configuration still resume", "[train][run]") {
  const auto data = test::make_colours("old-run-data", 4);
  const auto dir = test::temp_dir("old-run") + "/a";
  auto config = small_config(data, 1);
  config.train().mean(Mean::kChannels);  // what those runs subtracted
  Run::create(dir, config).fit();
  // last.pt as those versions wrote it: the first format, no configuration, the nine
  // numbers of the training state in a row, channel means only; and their options.txt.
  CheckpointExtras extras;
  auto model = load(dir + "/last.pt", {c10::Device(c10::kCPU)}, &extras);
  const auto trainer = extras.strings.at("trainer"), progress = extras.strings.at("run/progress");
  std::vector<double> state;
  for (const char* key : {"epoch", "step"}) state.push_back(field(trainer, key));
  for (const char* key : {"best_error", "bad_epochs", "loss_sum", "correct", "seen", "seconds"}) {
    state.push_back(field(progress, key));
  }
  state.push_back(field(trainer, "lr"));
  CheckpointExtras old;
  for (const auto& [key, value] : extras.tensors) {
    if (key.rfind("momentum/", 0) == 0 || key.rfind("rng/", 0) == 0) old.tensors[key] = value;
  }
  const auto pre = Preprocessing::from(extras, dir + "/last.pt");
  old.tensors["train/state"] = torch::tensor(state, torch::kDouble);
  old.tensors["mean_rgb"] = pre.mean_rgb;
  old.strings["classes"] = "0\n1\n";
  old.strings["preprocessing"] = "resize=72\ncrop=67\n";
  std::smatch line;
  REQUIRE(std::regex_search(progress, line, std::regex("\"history\":\\[(.*)\\]")));
  old.strings["train/history"] = line[1].str() + "\n";
  test::save_format1(*model, dir + "/last.pt", test::format1_caffe_options(2), old.tensors, old.strings);
  std::ofstream(dir + "/options.txt") << "arch=caffe\nbatch-size=4\nchannels-last=0\ndata=" << data
                                      << "\ndevices=cpu\ndropout=0.000000\nepochs=1\nexecution=grouped\ninit=\n"
                                         "input-size=67\nlr=0.001000\nlr-policy=plateau\nmomentum=0.900000\n"
                                         "patience=1\npca-std=0.100000\nprecision=fp32\nresize=72\nseed=5\n"
                                         "skip-bad=0\nstats=\nstep-epochs=30\nten-crop=0\ntf32=0\nval="
                                      << data << "\nweight-decay=0.000500\nworkers=1\n";
  const auto resumed = Run::config_of(dir);
  CHECK(resumed.train().batch_size() == 4);
  CHECK(resumed.train().mean() == c10::optional<Mean>(Mean::kChannels));
  CHECK(resumed.train().on_error() == data::OnError::kFail);
  auto run = Run::resume(dir, [](RunConfig& c) { c.train().epochs(2); });
  CHECK(run.trainer().epoch() == 1);
  REQUIRE(run.fit() == Run::Outcome::kFinished);
  CHECK(run.history().size() == 2);
  // Written back in today's form: the next resume reads it from last.pt.
  CHECK(read_extras(dir + "/last.pt").strings.count("run/config") == 1);
}

TEST_CASE("A checkpoint of the first format, as that version wrote it, reads as today's", "[train][run][checkpoint]") {
  const auto dir = test::temp_dir("format1");
  const auto path = dir + "/last.pt";
  gunzip(std::string(ALEXNET_SOURCE_DIR) + "/tests/fixtures/checkpoint-format1.pt.gz", path);
  const auto manifest = test::read_text(std::string(ALEXNET_SOURCE_DIR) + "/tests/fixtures/checkpoint-format1.json");
  const auto expected = nlohmann::json::parse(manifest);

  CheckpointExtras extras;
  const auto model = load(path, {c10::Device(c10::kCPU)}, &extras);
  // The options its "key=value" lines held.
  const auto& o = model->options;
  CHECK(o.architecture() == Architecture::kTwoTower);
  CHECK(o.num_classes() == 3);
  CHECK(o.input_size() == 67);
  CHECK(o.init() == Init::kCaffe);
  CHECK((o.lrn_across_towers() && o.ceil_mode() && !o.pool_before_lrn()));
  CHECK((o.lrn()->k() == 1.0 && o.lrn()->alpha() == 1e-4 && o.lrn()->mode() == LRNMode::kAverage));
  CHECK(o.to_json() == AlexNetOptions::caffe().input_size(67).num_classes(3).dropout(0).to_json());
  // Its weights, bit for bit: zero but fc8's biases, which training moved.
  const auto bias = model->named_parameters()["tower0.fc8.bias"];
  for (size_t i = 0; i < expected["tower0.fc8.bias"].size(); ++i) {
    CHECK(bias[static_cast<int64_t>(i)].item<double>() == expected["tower0.fc8.bias"][i].get<double>());
  }
  double abs_sum = 0;
  for (const auto& p : model->parameters()) abs_sum += p.abs().sum().item<double>();
  CHECK(abs_sum == expected["parameters_abs_sum"].get<double>());
  // Its preprocessing: class names (not ASCII), sizes, means, the mean image.
  const auto pre = Preprocessing::from(extras, path);
  CHECK(pre.classes == expected["classes"].get<std::vector<std::string>>());
  CHECK(pre.resize == expected["resize"].get<int64_t>());
  CHECK(pre.crop == expected["crop"].get<int64_t>());
  CHECK(pre.mean == Mean::kImage);
  for (int64_t c = 0; c < 3; ++c) CHECK(pre.mean_rgb[c].item<double>() == expected["mean_rgb"][c].get<double>());
  CHECK(pre.mean_image.to(torch::kDouble).sum().item<double>() == expected["mean_image_sum"].get<double>());
  // The training state, in today's records.
  CHECK(field(extras.strings.at("trainer"), "epoch") == expected["epochs_done"].get<double>());
  CHECK(field(extras.strings.at("trainer"), "lr") == expected["lr"].get<double>());
  CHECK(extras.tensors.count("momentum/tower0.fc8.bias") == 1);
  CHECK(extras.tensors.count("rng/cpu") == 1);
  CHECK(field(extras.strings.at("run/progress"), "train_loss") == expected["history"]["train_loss"].get<double>());
  CHECK(RunConfig::from_json(extras.strings.at("run/config")).to_json() ==
        RunConfig::from_json(expected["config"].dump()).to_json());
  for (const char* gone : {"classes", "train/progress", "train/history", "train/seed"}) {
    CHECK(extras.strings.count(gone) == 0);
  }
  // A trainer takes its state back.
  Trainer trainer{AlexNet(o), TrainerOptions()};
  trainer.restore(extras, path);
  CHECK(trainer.epoch() == 1);
  CHECK(trainer.lr() == expected["lr"].get<double>());
}

TEST_CASE("A run that cannot start leaves its folder as it was", "[train][run]") {
  const auto data = test::make_colours("run-undo", 2);
  const auto base = test::temp_dir("run-undo-out");
  // Statistics that do not exist are refused before anything is made; an image that
  // cannot be read is found while the statistics are computed, in the new folder.
  CHECK_THROWS_WITH(Run::create(base + "/new", small_config(data, 1).stats(base + "/none.pt")),
                    "stats '" + base + "/none.pt' does not exist (alexnet stats writes it)");
  CHECK_FALSE(fs::exists(base + "/new"));
  const auto broken = test::make_colours("run-undo-broken", 2);
  std::ofstream(broken + "/1/broken.png") << "not a PNG";
  const auto missing = small_config(broken, 1);
  CHECK_THROWS_WITH(Run::create(base + "/new", missing), Catch::Contains("broken.png"));
  CHECK_FALSE(fs::exists(base + "/new"));
  // An overwrite that fails puts the old run back, file for file.
  Run::create(base + "/old", small_config(data, 1)).fit();
  const auto before = test::read_text(base + "/old/metrics.jsonl");
  CHECK_THROWS(Run::create(base + "/old", missing, RunOptions().overwrite(true)));
  CHECK(test::read_text(base + "/old/metrics.jsonl") == before);
  CHECK(fs::exists(base + "/old/last.pt"));
  // One that starts replaces it, and nothing of the old one stays beside it.
  Run::create(base + "/old", small_config(data, 1).val(""), RunOptions().overwrite(true));
  CHECK_FALSE(fs::exists(base + "/old/metrics.jsonl"));
  CHECK_THAT(test::read_text(base + "/old/options.txt"), Catch::Contains("\nval=\n"));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(base)) names.push_back(e.path().filename().string());
  CHECK(names == std::vector<std::string>{"old"});
}

TEST_CASE("Resuming on other data, and precision auto, are resolved by the run", "[train][run]") {
  const auto data = test::make_colours("run-classes", 2);
  const auto dir = test::temp_dir("run-classes-out") + "/a";
  auto config = small_config(data, 1);
  config.trainer().precision(Precision::kAuto);
  std::vector<std::string> said;
  TrainHooks hooks;
  hooks.on_info = [&](const std::string& text) { said.push_back(text); };
  auto run = Run::create(dir, config, RunOptions().hooks(hooks));
  const auto chosen = cpu_bf16() == CpuBf16::kNative ? Precision::kBf16 : Precision::kFp32;
  CHECK(run.config().trainer().precision() == chosen);
  REQUIRE_FALSE(said.empty());
  CHECK_THAT(said.front(), Catch::StartsWith("precision auto: " + name_of(chosen)));
  run.fit();
  CHECK(Run::config_of(dir).trainer().precision() == chosen);  // the run records which
  // auto again at a resume is no change.
  CHECK(Run::resume(dir, [](RunConfig& c) { c.trainer().precision(Precision::kAuto); }).changes().empty());
  // A third class in the data: the run was trained on two.
  fs::create_directories(data + "/2");
  fs::copy_file(data + "/0/0.png", data + "/2/0.png");
  CHECK_THROWS_WITH(Run::resume(dir, [](RunConfig& c) { c.train().epochs(2); }),
                    "run '" + dir + "': the training data '" + data +
                        "' has 3 classes now, and the run was trained on 2: resume it on the data it was trained on");
}

TEST_CASE("A run checks its settings before reading any data", "[train][run]") {
  const auto data = test::make_colours("run-check", 2);
  const auto dir = test::temp_dir("run-check-out") + "/a";
  auto config = small_config(data, 1);
  config.input_size(60);
  CHECK_THROWS_WITH(Run::create(dir, config), Catch::Contains("input size 60") && Catch::Contains("too small"));
  config.input_size(80);
  CHECK_THROWS_WITH(Run::create(dir, config),
                    "input_size 80 is larger than resize 72: the crop must fit the resized image");
  config.input_size(67).train().batch_size(0);
  CHECK_THROWS_WITH(Run::create(dir, config), "batch_size must be positive, got 0");
  CHECK_THROWS_AS(Run::create(dir, config), OptionError);
  config.train().batch_size(4);
  config.data(data + "/nowhere");
  CHECK_THROWS_WITH(Run::create(dir, config), "data '" + data + "/nowhere' does not exist");
  CHECK_FALSE(fs::exists(dir));  // nothing made
  CHECK_THROWS_WITH(RunConfig().set("precision", "fp8"), "precision takes one of fp32, bf16, fp16, auto, got 'fp8'");
  CHECK_THROWS_WITH(RunConfig().set("epochs", "ten"), "epochs takes a whole number, got 'ten'");
  // Every setting survives its JSON.
  auto every = small_config(data, 3);
  every.init(Init::kPaper).devices({c10::Device("cpu")}).execution(Execution::kTowers);
  every.train().mean(Mean::kChannels).ten_crop(true).on_error(data::OnError::kSkip);
  every.trainer().precision(Precision::kBf16);
  CHECK(RunConfig::from_json(every.to_json()).to_json() == every.to_json());
  for (const auto& setting : RunConfig::settings()) {
    CHECK(RunConfig::from_json(every.to_json()).get(setting.name) == every.get(setting.name));
    CHECK_FALSE(setting.help.empty());
  }
}

TEST_CASE("A run folder is one process's at a time, and a killed writer's temporaries go at the resume", "[train][run]") {
  const auto data = test::make_colours("run-lock", 2);
  const auto dir = test::temp_dir("run-lock-out") + "/run";
  const auto pid = std::to_string(::getpid());
  const auto in_use = "run '" + dir + "' is in use by process " + pid + ": one process at a time (wait for it, or stop it)";
  {
    auto first = Run::create(dir, small_config(data, 1));
    // Held from create until fit returns: an overwrite or a resume meanwhile is refused
    // (the lock is per open file, so this process is refused too).
    CHECK(test::message_of([&] { Run::create(dir, small_config(data, 1), RunOptions().overwrite(true)); }) == in_use);
    CHECK(fs::exists(dir + "/stats.pt"));  // nothing of the first was touched
    first.fit();
    // Released once fit returns.
    Run::resume(dir, [](RunConfig& c) { c.train().epochs(2); }).fit();
  }
  CHECK(read_metrics(dir + "/metrics.jsonl").size() == 2);
  // Temporaries of a writer that was killed (its pid is gone) are removed by the next
  // resume; one whose writer lives (pid 1) is not.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const auto orphan = dir + "/last.pt.tmp-" + std::to_string(child);
  const auto alive = dir + "/notes.tmp-1";
  std::ofstream(orphan) << "half a checkpoint";
  std::ofstream(alive) << "another writer's";
  Run::resume(dir);
  CHECK_FALSE(fs::exists(orphan));
  CHECK(fs::exists(alive));
}

TEST_CASE("A stop ends the statistics and the validation too, and the resume equals an uninterrupted run",
          "[train][run]") {
  const auto data = test::make_colours("run-stop-anywhere", 6);
  const auto base = test::temp_dir("run-stop-anywhere-out");
  // Set before the statistics: the run is not started, and its folder not made.
  std::atomic<bool> stop{true};
  TrainHooks hooks;
  hooks.stop = &stop;
  CHECK_THROWS_AS(Run::create(base + "/stats", small_config(data, 1), RunOptions().hooks(hooks)), Stopped);
  CHECK_FALSE(fs::exists(base + "/stats"));
  // Set at the epoch's last step: its training is done, validation is stopped.
  stop = false;
  hooks.on_step = [&](int64_t, int64_t step, int64_t steps, double, double) {
    if (step == steps) stop = true;
  };
  auto stopped = Run::create(base + "/val", small_config(data, 2), RunOptions().hooks(hooks));
  REQUIRE(stopped.fit() == Run::Outcome::kStopped);
  CHECK(stopped.history().empty());  // epoch 1 not yet validated
  auto again = Run::resume(base + "/val");
  REQUIRE(again.fit() == Run::Outcome::kFinished);
  auto straight = Run::create(base + "/straight", small_config(data, 2));
  straight.fit();
  REQUIRE(again.history().size() == 2);
  for (size_t e = 0; e < 2; ++e) {
    INFO("epoch " << e + 1);
    CHECK(again.history()[e].train_loss == straight.history()[e].train_loss);
    CHECK(again.history()[e].val_loss == straight.history()[e].val_loss);
    CHECK(again.history()[e].val_top1 == straight.history()[e].val_top1);
  }
}

// Section 5's rule and Caffe's, replayed from what a run recorded: with a rate too small
// to learn, validation stalls after the first epoch, so the plateau rule divides by 10
// once every `patience` epochs without a better error; the step rule multiplies by
// lr_factor every step_epochs whatever validation says.
TEST_CASE("The learning-rate rules change the rate when and by how much they say", "[train][run]") {
  const auto data = test::make_colours("lr-rules", 4);
  for (const auto policy : {LrPolicy::kPlateau, LrPolicy::kStep}) {
    const auto dir = test::temp_dir("lr-rules-run");
    auto config = small_config(data, 7);
    config.train().lr_policy(policy).patience(2).step_epochs(3).lr_factor(0.5);
    config.trainer().lr(1e-9);
    auto run = Run::create(dir + "/run", config);
    REQUIRE(run.fit() == Run::Outcome::kFinished);
    const auto history = run.history();
    REQUIRE(history.size() == 7);
    // The replay: the rate each epoch ran at, from the validation errors before it.
    double lr = 1e-9, best = 2;
    int64_t bad = 0, changes = 0;
    for (size_t e = 0; e < history.size(); ++e) {
      INFO(name_of(policy) << ", epoch " << e + 1);
      CHECK(history[e].lr == Approx(lr).epsilon(1e-12));
      const double error = 1 - history[e].val_top1;
      if (error < best) {
        best = error;
        bad = 0;
      } else {
        ++bad;
      }
      if (policy == LrPolicy::kPlateau && bad >= 2) {
        lr *= 0.1;
        bad = 0;
        ++changes;
      } else if (policy == LrPolicy::kStep && (e + 1) % 3 == 0) {
        lr *= 0.5;
        ++changes;
      }
    }
    // Each rule acted at least twice within the run (plateau after epochs 3, 5 and 7;
    // step after 3 and 6), so a wrong rule would show.
    CHECK(changes >= 2);
    fs::remove_all(dir);
  }
}
