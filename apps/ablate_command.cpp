// alexnet ablate: flags onto alexnet::AblationOptions; the study, its table and its
// pictures are the library's (alexnet/train/ablation.h).

#include "commands.h"
#include "launcher.h"

#include <alexnet/train/ablation.h>

#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <set>

namespace alexnet::app {
namespace {

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

struct AblateFlags {
  std::string out, seeds, variants;
  double threshold = 0.25;
  bool threshold_given = false, report = false;
  std::vector<std::pair<std::string, std::string>> given;  // settings named on the command line
};

void run_ablate(const AblateFlags& f) {
  // A study that exists continues with its stored options; flags given change them
  // (the library refuses a change to what the runs compute).
  const bool exists = std::filesystem::exists(std::filesystem::path(f.out) / "ablation.json");
  auto options = exists ? AblationOptions::stored(f.out) : AblationOptions();
  auto config = options.config();
  for (const auto& [name, value] : f.given) config.set(name, value);
  options.config(config);
  if (!f.seeds.empty()) {
    std::vector<int64_t> seeds;
    for (const auto& s : split(f.seeds)) seeds.push_back(parse_number<int64_t>("--seeds", s));
    options.seeds(seeds);
  }
  if (!f.variants.empty()) options.variants(f.variants == "all" ? std::vector<std::string>{} : split(f.variants));
  if (f.threshold_given) options.threshold(f.threshold);

  if (!f.report) {
    TrainHooks hooks;
    hooks.on_info = [](const std::string& text) { spdlog::info("{}", text); };
    hooks.on_warning = [](const std::string& text) { spdlog::warn("{}", text); };
    hooks.on_epoch = [](const EpochMetrics& m) { spdlog::info("{}", m.to_text()); };
    hooks.stop = &stop_flag();
    options.hooks(hooks);
    stop_on_signals(/*announce=*/true);
    if (ablate(f.out, options) == Run::Outcome::kStopped) {
      spdlog::warn("stopped; continue with: alexnet ablate --out {}", f.out);
      throw ExitStatus{130};
    }
  }
  const auto report = ablation_report(f.out, options);
  std::cout << report.to_markdown();
  for (const auto& path : write_ablation_report(f.out, report)) spdlog::info("wrote {}", path);
}

}  // namespace

void add_ablate_command(CLI::App& app) {
  auto f = std::make_shared<AblateFlags>();
  auto* cmd = app.add_subcommand(
      "ablate", "Train the paper's network and each alternative it measured (Sections 3.1-4.2) on one budget and "
                "seeds; write the table, Figure 1 and the differences");
  cmd->add_option("--out", f->out, "The study's folder (runs/, ablation.md, figure1.png...); again: continue it")
      ->required();
  cmd->add_option("--seeds", f->seeds, "Seeds, one run of each variant per seed (default 1,2,3)");
  std::string names = "all";
  for (const auto& v : paper_variants()) names += ", " + v.name;
  cmd->add_option("--variants", f->variants, "Which: " + names + " (the paper's network is always trained)");
  cmd->add_option_function<double>("--threshold", [f](double t) {
        f->threshold = t;
        f->threshold_given = true;
      },
                                   "Figure 1's measure: epochs to this training error (0.25: 25%)")
      ->default_str("0.25");
  cmd->add_flag("--report", f->report, "Only write the report from the runs that have finished");
  // The settings every run shares, as alexnet train takes them; those that make the
  // variants, the seed and fine-tuning's are the study's own.
  static const std::set<std::string> own{"activation", "towers", "lrn",  "pool_size", "pool_stride", "random_crops",
                                         "flips",      "seed",   "weights", "freeze", "lr_mult",     "normalize"};
  add_setting_flags(cmd, [](const std::string& name) { return own.count(name) == 0; },
                    [f](const std::string& name, const std::string& value) { f->given.emplace_back(name, value); });
  cmd->callback([f] { run_ablate(*f); });
}

}  // namespace alexnet::app
