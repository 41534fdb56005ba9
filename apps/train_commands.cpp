#include "commands.h"
#include "launcher.h"
#include "progress.h"

#include <alexnet/checkpoint.h>
#include <alexnet/distributed.h>
#include <alexnet/runtime.h>
#include <alexnet/train.h>

#include <torch/cuda.h>

#include <spdlog/sinks/basic_file_sink.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <unistd.h>

namespace alexnet::app {
namespace fs = std::filesystem;
namespace {

// Set by the first Ctrl-C or SIGTERM: the trainer finishes its step and checkpoints.
std::atomic<bool> stop_requested{false};
// Whether this process says so (under data parallelism, rank 0 speaks for all).
volatile std::sig_atomic_t announce_stop = 1;

extern "C" void on_signal(int) {
  if (stop_requested.exchange(true)) ::_exit(130);  // the second one stops at once
  const char note[] = "\nstopping after this step (again to stop at once)\n";
  if (announce_stop) {
    [[maybe_unused]] auto written = ::write(2, note, sizeof(note) - 1);
  }
}

std::vector<c10::Device> parse_devices(const std::string& text) {
  std::vector<c10::Device> devices;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) devices.emplace_back(item);
  if (devices.empty() || devices.size() > 2) {
    throw std::invalid_argument("--devices takes one device or two separated by a comma, got '" + text + "'");
  }
  return devices;
}

// The flags of `alexnet train`, written to RUN/options.txt so that --resume RUN needs no others.
struct TrainFlags {
  std::string data, val, stats, out, resume, arch = "paper", init, devices = "cpu", execution = "grouped";
  std::string lr_policy = "plateau", precision = "fp32";
  int64_t input_size = 0, resize = 256, epochs = 90, batch_size = 128, patience = 1, step_epochs = 30, workers = 2;
  double lr = 0.01, dropout = 0.5, pca_std = 0.1, momentum = 0.9, weight_decay = 5e-4;
  uint64_t seed = 1;
  bool ten_crop = false, overwrite = false, skip_bad = false, channels_last = false, tf32 = false;
  int nproc_per_node = 1;  // not saved: a run may resume on another number of processes
  double dist_timeout = 300;
  std::string dist_backend = "auto";

  // Every flag that shapes the run, by flag name, as text and back.
  std::map<std::string, std::string> to_map() const {
    return {{"data", data}, {"val", val}, {"stats", stats}, {"arch", arch}, {"init", init}, {"devices", devices},
            {"execution", execution}, {"lr-policy", lr_policy}, {"input-size", std::to_string(input_size)},
            {"resize", std::to_string(resize)}, {"epochs", std::to_string(epochs)},
            {"batch-size", std::to_string(batch_size)}, {"patience", std::to_string(patience)},
            {"step-epochs", std::to_string(step_epochs)}, {"workers", std::to_string(workers)},
            {"lr", std::to_string(lr)}, {"dropout", std::to_string(dropout)}, {"pca-std", std::to_string(pca_std)},
            {"momentum", std::to_string(momentum)}, {"weight-decay", std::to_string(weight_decay)},
            {"seed", std::to_string(seed)}, {"ten-crop", ten_crop ? "1" : "0"}, {"skip-bad", skip_bad ? "1" : "0"},
            {"precision", precision}, {"channels-last", channels_last ? "1" : "0"}, {"tf32", tf32 ? "1" : "0"}};
  }
  void from_map(const std::map<std::string, std::string>& m) {
    auto get = [&](const char* key) { return m.count(key) ? m.at(key) : std::string(); };
    data = get("data"), val = get("val"), stats = get("stats"), arch = get("arch"), init = get("init");
    devices = get("devices"), execution = get("execution"), lr_policy = get("lr-policy");
    input_size = std::stoll(get("input-size")), resize = std::stoll(get("resize")), epochs = std::stoll(get("epochs"));
    batch_size = std::stoll(get("batch-size")), patience = std::stoll(get("patience"));
    step_epochs = std::stoll(get("step-epochs")), workers = std::stoll(get("workers"));
    lr = std::stod(get("lr")), dropout = std::stod(get("dropout")), pca_std = std::stod(get("pca-std"));
    momentum = std::stod(get("momentum")), weight_decay = std::stod(get("weight-decay"));
    seed = std::stoull(get("seed")), ten_crop = get("ten-crop") == "1", skip_bad = get("skip-bad") == "1";
    precision = get("precision").empty() ? "fp32" : get("precision");  // runs from before these flags
    channels_last = get("channels-last") == "1", tf32 = get("tf32") == "1";
  }
};

void add_file_log(const std::string& path) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S] %l: %v");
  spdlog::default_logger()->sinks().push_back(sink);
}

// This process's place in a data-parallel world (torchrun's, Slurm's or
// --nproc-per-node's environment); a world of one without them. Ranks other than 0
// report warnings and errors only, marked with their rank: one voice.
DistributedOptions world_from_environment() {
  auto options = DistributedOptions::from_environment();
  if (options.rank != 0) {
    spdlog::set_level(spdlog::level::warn);
    spdlog::set_pattern("%^%l%$ [rank " + std::to_string(options.rank) + "]: %v");
  }
  return options;
}

// Joins the world, or nullptr for a world of one. `devices`, when given, become this
// replica's (rank_devices: shifted by LOCAL_RANK), and its first GPU is the rank's GPU
// (so that the "auto" backend is NCCL when this build has it).
std::unique_ptr<ProcessGroup> join_world(DistributedOptions options, double timeout_seconds, const std::string& backend,
                                         std::vector<c10::Device>* devices = nullptr) {
  if (options.world_size == 1) return nullptr;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  if (devices) {
    *devices = rank_devices(*devices, options.local_rank, static_cast<int>(torch::cuda::device_count()));
    for (const auto& d : *devices) {
      if (d.is_cuda() && options.cuda_device < 0) options.cuda_device = d.index();
    }
  }
  if (backend == "nccl" && options.cuda_device < 0) throw std::invalid_argument("--dist-backend nccl needs CUDA --devices");
  options.backend = backend;
  auto group = std::make_unique<ProcessGroup>(options);
  spdlog::info("data parallel: rank {} of {} ({}, rendezvous {}:{})", options.rank, options.world_size,
               group->options().backend, options.master_addr, options.master_port);
  return group;
}

// Every rank's parameters, summed bit patterns per tensor: equal on all ranks exactly
// when the replicas hold the same weights.
void check_replicas(AlexNetImpl& model, ProcessGroup& group, int64_t epoch) {
  std::vector<int64_t> local;
  for (const auto& p : model.parameters()) {
    local.push_back(p.detach().to(torch::kCPU).contiguous().view(torch::kInt).to(torch::kLong).sum().item<int64_t>());
  }
  const auto all = torch::tensor(local, torch::kLong);
  group.sum(all);
  if (!torch::equal(all, torch::tensor(local, torch::kLong) * group.size())) {
    throw std::runtime_error("data parallel: the replicas' weights differ after epoch " + std::to_string(epoch));
  }
  spdlog::info("data parallel: the {} replicas' weights are identical after epoch {}", group.size(), epoch);
}

void run_train(TrainFlags f, CLI::App* cmd) {
  if (launched_ranks(f.nproc_per_node)) return;
  const auto world = world_from_environment();
  const bool writer = world.rank == 0;
  const bool resuming = !f.resume.empty();
  std::string run = resuming ? f.resume : f.out;
  if (run.empty()) throw std::invalid_argument("give --out RUN for a new run, or --resume RUN");
  const auto options_file = (fs::path(run) / "options.txt").string();
  if (resuming) {
    std::ifstream in(options_file);
    if (!in) throw std::runtime_error("run '" + run + "': no options.txt, so nothing to resume");
    std::map<std::string, std::string> saved;
    std::string line;
    while (std::getline(in, line)) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) saved[line.substr(0, eq)] = line.substr(eq + 1);
    }
    // Flags given now win (more --epochs, say); the rest come from the run.
    auto given = f.to_map();
    for (const auto& [key, value] : saved) {
      if (cmd->count("--" + key) == 0) {
        given[key] = value;
      }
    }
    f.from_map(given);
  } else if (writer && fs::exists(run) && !fs::is_empty(run)) {
    if (!f.overwrite) {
      throw std::runtime_error("run '" + run + "' exists: --resume " + run + " to continue it, or --overwrite to replace it");
    }
    fs::remove_all(run);
  }
  if (writer) {
    fs::create_directories(run);
    add_file_log((fs::path(run) / "train.log").string());
  }
  // Joined after rank 0 has set up the run directory (the rendezvous waits for every
  // rank), so that no rank reads a stats.pt that --overwrite is about to remove.
  auto devices = parse_devices(f.devices);
  const auto group = join_world(world, f.dist_timeout, f.dist_backend, &devices);

  const data::ReadOptions read;
  auto train = data::open_source(f.data, read);
  auto val = f.val.empty() ? nullptr : data::open_source(f.val, read);
  const auto stats_path = f.stats.empty() ? (fs::path(run) / "stats.pt").string() : f.stats;
  data::Statistics stats;
  if (fs::exists(stats_path)) {
    stats = data::Statistics::load(stats_path);
  } else if (f.stats.empty()) {
    spdlog::info("computing the training set's statistics (alexnet stats) into {}", stats_path);
    stats = data::compute_statistics(*train, f.resize, f.workers,
                                      f.skip_bad ? data::OnError::kSkip : data::OnError::kFail);
    if (writer) stats.save(stats_path);
  } else {
    throw std::runtime_error("statistics '" + f.stats + "': does not exist (alexnet stats writes it)");
  }

  auto options = preset(f.arch, f.input_size)
                     .num_classes(static_cast<int64_t>(train->classes().size()))
                     .dropout(f.dropout)
                     .devices(devices)
                     .execution(execution_from_string(f.execution));
  if (!f.init.empty()) options.init(init_from_string(f.init));
  manual_seed(f.seed);  // distinct on each GPU, so towers on two GPUs drop different units
  AlexNet model(options);
  const auto train_options = TrainOptions()
                                 .epochs(f.epochs)
                                 .batch_size(f.batch_size)
                                 .lr(f.lr)
                                 .momentum(f.momentum)
                                 .weight_decay(f.weight_decay)
                                 .lr_policy(lr_policy_from_string(f.lr_policy))
                                 .patience(f.patience)
                                 .step_epochs(f.step_epochs)
                                 .workers(f.workers)
                                 .seed(f.seed)
                                 .resize(f.resize)
                                 .pca_std(f.pca_std)
                                 .ten_crop(f.ten_crop)
                                 .on_error(f.skip_bad ? data::OnError::kSkip : data::OnError::kFail)
                                 .precision(precision_from_string(f.precision))
                                 .channels_last(f.channels_last);
  set_tf32(f.tf32);
  Trainer trainer(model, train, val, stats, train_options);
  const auto last = (fs::path(run) / "last.pt").string();
  if (resuming) {
    trainer.restore(last);
    spdlog::info("resuming {} after {} epochs", run, trainer.epochs_done());
  } else if (writer) {
    std::string text;
    for (const auto& [key, value] : f.to_map()) text += key + "=" + value + "\n";
    std::ofstream(options_file) << text;
  }
  if (group) group->broadcast(model->parameters());  // every replica starts from rank 0's weights
  spdlog::info("training {} ({} images, {} classes, input {}x{}) for {} epochs into {}", to_string(options.architecture()),
               train->size(), train->classes().size(), options.input_size(), options.input_size(), f.epochs, run);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  ProgressLine progress("epoch");
  TrainHooks hooks;
  hooks.stop = &stop_requested;
  if (group) {
    hooks.rank = static_cast<size_t>(group->rank());
    hooks.world = static_cast<size_t>(group->size());
    hooks.writer = writer;
    hooks.sum = [&](const torch::Tensor& t) { group->sum(t); };
    // Each bucket's all-reduce starts during the backward pass as its gradients arrive
    // (scripts/bench_scaling.sh: 1.57-1.63x instead of 1.39-1.54x for two processes here).
    group->overlap(model->parameters());
    hooks.reduce_gradients = [&](std::vector<torch::Tensor>&) { group->finish_overlap(); };
    spdlog::info("global batch {} ({} per rank x {} ranks)", f.batch_size * group->size(), f.batch_size, group->size());
  }
  int64_t current_epoch = 0;
  hooks.on_step = [&](int64_t epoch, int64_t step, int64_t steps, double loss, double) {
    if (!writer) return;
    if (epoch != current_epoch) {
      current_epoch = epoch;
      progress.restart("epoch " + std::to_string(epoch));
    }
    char extra[64];
    std::snprintf(extra, sizeof(extra), "loss %.4f ", loss);
    progress.update(static_cast<size_t>(step), static_cast<size_t>(steps), extra);
  };
  hooks.on_epoch = [&](const EpochMetrics& m) {
    if (group) check_replicas(*model, *group, m.epoch);
    spdlog::info("epoch {}: train loss {:.4f} top-1 {:.2f}% | val loss {:.4f} top-1 {:.2f}% top-5 {:.2f}% | lr {:g} | "
                 "{:.0f} images/s, {:.0f} s",
                 m.epoch, m.train_loss, 100 * m.train_top1, m.val_loss, 100 * m.val_top1, 100 * m.val_top5, m.lr,
                 m.images_per_second, m.seconds);
  };
  hooks.on_warning = [](const std::string& text) { spdlog::warn("{}", text); };
  if (!writer) announce_stop = 0;
  if (trainer.fit(run, hooks) == Trainer::Outcome::kStopped) {
    if (!writer) std::exit(130);
    spdlog::warn("stopped: checkpoint in {}; continue with: alexnet train --resume {}", last, run);
    std::exit(130);
  }
  spdlog::info("done: {} (last), {} (best)", last, (fs::path(run) / "best.pt").string());
}

}  // namespace

void add_train_commands(CLI::App& app) {
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand("train", "Train a network (Section 5 of the paper) into a run directory");
    cmd->add_option("--data", f->data, "Training data: image folder, list file or packed set");
    cmd->add_option("--val", f->val, "Validation data, evaluated after every epoch");
    cmd->add_option("--stats", f->stats, "Statistics file (alexnet stats); default: computed into RUN/stats.pt");
    cmd->add_option("--out", f->out, "Run directory: log, metrics.jsonl, last.pt, best.pt, options.txt");
    cmd->add_option("--resume", f->resume, "Continue the run in this directory exactly where it stopped");
    cmd->add_flag("--overwrite", f->overwrite, "Replace an existing run directory");
    cmd->add_option("--arch", f->arch, "paper, caffe or torchvision")
        ->check(CLI::IsMember({"paper", "caffe", "torchvision"}))->capture_default_str();
    cmd->add_option("--init", f->init, "Initialisation: paper, caffe or pytorch (default: the preset's)")
        ->check(CLI::IsMember({"paper", "caffe", "pytorch"}));
    cmd->add_option("--input-size", f->input_size, "Crop side the network sees (default: the preset's)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--resize", f->resize, "Side images are brought to before cropping")->capture_default_str();
    cmd->add_option("--devices", f->devices, "cpu, cuda:0, or cuda:0,cuda:1 (one tower each)")->capture_default_str();
    cmd->add_option("--execution", f->execution, "grouped or towers")
        ->check(CLI::IsMember({"grouped", "towers"}))->capture_default_str();
    cmd->add_option("--epochs", f->epochs, "Epochs")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--batch-size", f->batch_size, "Examples per step")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--lr", f->lr, "Learning rate")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--momentum", f->momentum, "Momentum")->capture_default_str();
    cmd->add_option("--weight-decay", f->weight_decay, "Weight decay")->capture_default_str();
    cmd->add_option("--lr-policy", f->lr_policy, "plateau (divide by 10 when validation stalls), step or fixed")
        ->check(CLI::IsMember({"plateau", "step", "fixed"}))->capture_default_str();
    cmd->add_option("--patience", f->patience, "Epochs without improvement before the plateau policy divides")
        ->capture_default_str();
    cmd->add_option("--step-epochs", f->step_epochs, "Epochs between divisions under the step policy")
        ->capture_default_str();
    cmd->add_option("--dropout", f->dropout, "Dropout probability on fc6 and fc7")->capture_default_str();
    cmd->add_option("--pca-std", f->pca_std, "PCA colour noise: standard deviation of alpha (0: off)")->capture_default_str();
    cmd->add_option("--workers", f->workers, "Data loading threads")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--seed", f->seed, "Seeds initialisation, data order, augmentation and dropout")->capture_default_str();
    cmd->add_flag("--ten-crop", f->ten_crop, "Validate on ten crops instead of the centre crop");
    cmd->add_flag("--skip-bad", f->skip_bad, "Leave out unreadable images instead of stopping");
    cmd->add_option("--precision", f->precision, "fp32; bf16 (autocast, CPU or CUDA); fp16 (autocast and loss scaling, CUDA)")
        ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))->capture_default_str();
    cmd->add_flag("--channels-last", f->channels_last, "Channels-last (NHWC) convolutions, faster on GPUs");
    cmd->add_flag("--tf32", f->tf32, "Allow TensorFloat-32 on CUDA (Ampere and later): faster, ~10-bit mantissa products");
    cmd->add_option("--nproc-per-node", f->nproc_per_node,
                    "Data parallel: start this many processes here (under torchrun or srun, leave it out)")
        ->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--dist-timeout", f->dist_timeout,
                    "Data parallel: seconds to wait for the other ranks before failing")
        ->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--dist-backend", f->dist_backend,
                    "Data parallel: auto (nccl when the devices are GPUs and this build has it, else gloo), gloo or nccl")
        ->check(CLI::IsMember({"auto", "gloo", "nccl"}))->capture_default_str();
    cmd->callback([f, cmd] {
      if (f->resume.empty() && f->data.empty()) throw std::invalid_argument("--data is required for a new run");
      run_train(*f, cmd);
    });
  }
  {
    struct Flags {
      std::string weights, data;
      bool ten_crop = false, json = false, skip_bad = false;
      int64_t batch_size = 128, workers = 2;
      int nproc_per_node = 1;
      double dist_timeout = 300;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("evaluate", "Top-1, top-5, loss and per-class accuracy of a checkpoint on a data set");
    cmd->add_option("--weights", f->weights, "Checkpoint written by alexnet train")->required();
    cmd->add_option("--data", f->data, "Image folder, list file or packed set")->required();
    cmd->add_flag("--ten-crop", f->ten_crop, "Average the softmax of ten crops (Section 4.1)");
    cmd->add_flag("--json", f->json, "Print one JSON object");
    cmd->add_flag("--skip-bad", f->skip_bad, "Leave out unreadable images instead of stopping");
    cmd->add_option("--batch-size", f->batch_size, "Images per forward pass")->capture_default_str();
    cmd->add_option("--workers", f->workers, "Data loading threads")->capture_default_str();
    cmd->add_option("--nproc-per-node", f->nproc_per_node, "Split the images over this many processes here")
        ->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--dist-timeout", f->dist_timeout, "Seconds to wait for the other ranks before failing")
        ->check(CLI::PositiveNumber)->capture_default_str();
    cmd->callback([f] {
      if (launched_ranks(f->nproc_per_node)) return;
      const auto group = join_world(world_from_environment(), f->dist_timeout, "gloo");
      auto [model, pre] = load_for_inference(f->weights);
      const auto source = data::open_source(f->data);
      const auto on_error = f->skip_bad ? data::OnError::kSkip : data::OnError::kFail;
      const auto e = group ? evaluate_shard(model, source, pre, static_cast<size_t>(group->rank()),
                                            static_cast<size_t>(group->size()),
                                            [&](const torch::Tensor& t) { group->sum(t); }, f->ten_crop,
                                            f->batch_size, f->workers, on_error)
                           : evaluate(model, source, pre, f->ten_crop, f->batch_size, f->workers, on_error);
      if (group && group->rank() != 0) return;  // rank 0 reports the whole set
      if (f->json) {
        std::cout << e.to_json(pre.classes) << "\n";
        return;
      }
      std::printf("images %lld\ntop-1 %.2f%%\ntop-5 %.2f%%\nloss %.4f\n", static_cast<long long>(e.images),
                  100 * e.top1, 100 * e.top5, e.loss);
      for (size_t c = 0; c < e.per_class.size(); ++c) {
        std::printf("  %-24s %6.2f%% of %lld\n", (c < pre.classes.size() ? pre.classes[c] : std::to_string(c)).c_str(),
                    100 * e.per_class[c], static_cast<long long>(e.per_class_images[c]));
      }
      if (e.skipped) spdlog::warn("left out {} unreadable images", e.skipped);
    });
  }
  {
    struct Flags {
      std::string weights;
      std::vector<std::string> images;
      int64_t top = 5;
      bool ten_crop = false, json = false;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("classify", "The most probable classes of images");
    cmd->add_option("--weights", f->weights, "Checkpoint written by alexnet train")->required();
    cmd->add_option("images", f->images, "Image files")->required();
    cmd->add_option("--top", f->top, "How many classes to show")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_flag("--ten-crop", f->ten_crop, "Average the softmax of ten crops (Section 4.1)");
    cmd->add_flag("--json", f->json, "One JSON object per image: image, top [{label, index, probability}]");
    cmd->callback([f] {
      auto [model, pre] = load_for_inference(f->weights);
      const auto probabilities = classify(model, f->images, pre, f->ten_crop);
      const auto k = std::min<int64_t>(f->top, probabilities.size(1));
      const auto [values, indices] = probabilities.topk(k, 1);
      for (size_t i = 0; i < f->images.size(); ++i) {
        std::ostringstream line;
        line << std::setprecision(9);
        if (f->json) {
          line << "{\"image\":\"" << json_escape(f->images[i]) << "\",\"top\":[";
        } else {
          line << f->images[i] << "\n";
        }
        for (int64_t j = 0; j < k; ++j) {
          const auto index = indices[i][j].item<int64_t>();
          const auto& label = pre.classes.at(static_cast<size_t>(index));
          const double p = values[i][j].item<double>();
          if (f->json) {
            line << (j ? "," : "") << "{\"label\":\"" << json_escape(label) << "\",\"index\":" << index
                 << ",\"probability\":" << p << "}";
          } else {
            char text[160];
            std::snprintf(text, sizeof(text), "  %6.2f%%  %s (%lld)\n", 100 * p, label.c_str(), static_cast<long long>(index));
            line << text;
          }
        }
        if (f->json) line << "]}\n";
        std::cout << line.str();
      }
    });
  }
}

}  // namespace alexnet::app
