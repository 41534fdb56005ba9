#pragma once

// The paper's claims, measured: its network and each alternative it argued against
// (Sections 3.1-4.2) trained with one budget, schedule and set of seeds, and the effects
// put beside the paper's own figures.

#include <alexnet/train/run.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace alexnet {

/// One of the paper's choices beside the alternative it was measured against.
struct Variant {
  std::string name;     ///< "paper", "tanh", "one_tower", ...
  std::string section;  ///< the paper's section: "3.1"
  std::string change;   ///< what differs from the paper's network, in words
  /// The RunConfig settings (by name, as RunConfig::set takes them) that make it.
  std::vector<std::pair<std::string, std::string>> settings;
  /// The paper's measured effect of its own choice, in its words and figures.
  std::string paper_effect;
  /// The paper's top-1 and top-5 error without its choice minus with it, in percentage
  /// points on ImageNet (Sections 3.2-4.1); NaN where it gives none.
  double paper_top1 = 0, paper_top5 = 0;
};

/// The paper's network ("paper", no change) and its seven alternatives: tanh (3.1), one
/// tower of half the kernels (3.2), no LRN (3.3), non-overlapping 2x2 pooling (3.4), the
/// centre crop alone (4.1), no PCA colour noise (4.1), no dropout (4.2).
const std::vector<Variant>& paper_variants();

/// What `ablate` trains.
struct AblationOptions {
  AblationOptions() = default;
  /// What every run shares: data, validation data, network preset, input size,
  /// epochs, schedule, precision... Its seed and the variants' settings are replaced
  /// per run. Validation data is required (the errors compared are validation errors).
  TORCH_ARG(RunConfig, config) = {};
  /// One run of every variant per seed (seeds initialisation, data order, augmentation
  /// and dropout): the same seeds for every variant, so differences are paired.
  TORCH_ARG(std::vector<int64_t>, seeds) = std::vector<int64_t>{1, 2, 3};
  /// Names from paper_variants(); empty: all of them. "paper" is always trained (the
  /// differences are measured from it).
  TORCH_ARG(std::vector<std::string>, variants) = {};
  /// Figure 1's measure: the training error (in [0, 1]) whose first crossing counts
  /// the epochs (the paper: 25% on CIFAR-10).
  TORCH_ARG(double, threshold) = 0.25;
  /// What each run reports, and the stop flag (a stopped study resumes where it stopped).
  TORCH_ARG(TrainHooks, hooks) = {};

 public:
  /// The options an ablation folder was started with (DIR/ablation.json); throws
  /// naming the file when it is missing or damaged.
  static AblationOptions stored(const std::string& dir);
};

/// Per variant, over its finished seeds. Errors and gaps are fractions in [0, 1];
/// spreads are sample standard deviations over seeds (0 for one seed).
struct VariantResult {
  Variant variant;
  std::vector<int64_t> seeds;                   ///< finished runs
  std::vector<double> top1, top5;               ///< final validation error per seed
  std::vector<double> gap;                      ///< final validation minus training error per seed
  std::vector<std::vector<double>> train_error; ///< per seed, per epoch (with augmentation and dropout on)
  std::vector<double> epochs_to_threshold;      ///< per seed; NaN if never reached
  double images_per_second = 0;                 ///< median over seeds of the mean over epochs
  /// Paired with the paper's network (the same seeds): this variant's minus the paper's,
  /// per seed the two have in common.
  std::vector<double> delta_top1, delta_top5, delta_gap;
};

struct AblationReport {
  double threshold = 0;
  std::vector<VariantResult> variants;  ///< "paper" first
  std::string to_markdown() const;
  std::string to_json() const;
};

/// Trains every variant x seed of `options` into `dir`: DIR/runs/VARIANT-seedS, one
/// run each (Run), seed by seed so that an interrupted study has whole seeds. Once
/// started, the folder keeps its options (DIR/ablation.json): calling again continues it
/// (finished runs are kept, a stopped one resumes, a missing one starts); a setting
/// that differs from the stored one throws OptionError naming it (workers, devices,
/// execution and on_error may change; seeds, variants and threshold may too; epochs
/// may grow, and every run then trains on to them). The
/// training set's statistics are computed once (DIR/stats.pt) unless the config names a
/// file. A variant that the config already makes (pca_std 0 makes no_pca the paper's
/// network) is left out, said through hooks.on_info. Returns kStopped when the stop flag
/// stopped a run (the report then covers the finished runs).
Run::Outcome ablate(const std::string& dir, const AblationOptions& options);

/// The finished runs in `dir` as a report (the seeds and variants of `options`;
/// `threshold` from it too). Throws naming the folder when nothing has finished.
AblationReport ablation_report(const std::string& dir, const AblationOptions& options);

/// Writes the report into `dir`, each file atomically: ablation.md and
/// ablation-results.json (the table), figure1.png (training error against epochs, the
/// paper's network solid and tanh dashed, a line per seed, as the paper's Figure 1),
/// differences.png (each alternative's top-1 error and train-validation gap minus the
/// paper network's, a dot per seed, its mean and spread, and the paper's figure beside
/// it). Returns the paths written.
std::vector<std::string> write_ablation_report(const std::string& dir, const AblationReport& report);

}  // namespace alexnet
