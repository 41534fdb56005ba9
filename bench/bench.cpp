// Timings for scripts/bench.sh: prints one JSON object per line with images/s or
// milliseconds. The baseline (bench/baseline.py) measures the same work in Python.
//
//   alexnet_bench train|infer --arch paper|caffe|torchvision [--execution grouped|towers]
//   alexnet_bench lrn           conv1-sized LRN forward+backward: ours and LibTorch's
//   alexnet_bench onnx-reference --out DIR   ONNX models with inputs and our logits, for
//                               ONNX Runtime on the GPU machine (scripts/device_check.sh)

#include <alexnet/distributed.h>
#include <alexnet/lrn.h>
#include <alexnet/model.h>
#ifdef ALEXNET_INTEROP
#include <alexnet/onnx.h>
#include <alexnet/preprocessing.h>
#endif
#include <alexnet/precision.h>
#include <alexnet/runtime.h>
#include <alexnet/train.h>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/normalization.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

namespace {

struct Args {
  std::string mode;
  std::string arch = "paper";
  std::string execution = "grouped";
  int64_t batch = 128;
  int iterations = 3;
  int threads = 2;
  bool keep_memory = true;
  std::string device = "cpu";
  std::string precision = "fp32";
  bool channels_last = false;
  bool tf32 = false;     // CUDA: TensorFloat-32 convolutions and matrix products
  std::string out;
};

#ifdef ALEXNET_INTEROP
// Networks that compress well (weights of three values, scaled to keep activations in
// range; biases 0), so that they travel to the GPU machine small: DIR/NAME.onnx,
// NAME.input.f32 and NAME.logits.f32 (float32, little-endian), and manifest.json.
int onnx_reference(const std::string& dir) {
  std::ofstream manifest(dir + "/manifest.json");
  manifest << "[";
  const std::vector<std::pair<std::string, alexnet::AlexNetOptions>> nets{
      {"paper", alexnet::AlexNetOptions::paper().input_size(99).num_classes(10)},
      {"caffe", alexnet::AlexNetOptions::caffe().input_size(99).num_classes(10)}};
  for (size_t n = 0; n < nets.size(); ++n) {
    const auto& [name, options] = nets[n];
    alexnet::AlexNet model(options);
    model->eval();
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      if (p.key().find("bias") != std::string::npos) {
        p.value().zero_();
      } else {
        const double fan_in = static_cast<double>(p.value()[0].numel());
        p.value().copy_((torch::randint(-1, 2, p.value().sizes()) * std::sqrt(1.5 / fan_in)).to(torch::kFloat));
      }
    }
    const auto side = options.input_size();
    const auto x = torch::randn({2, 3, side, side}) * 50;
    const auto logits = model->forward(x).contiguous();
    alexnet::Preprocessing pre;
    pre.mean_rgb = torch::zeros({3}, torch::kDouble);
    pre.resize = side, pre.crop = side;
    for (int c = 0; c < options.num_classes(); ++c) pre.classes.push_back(std::to_string(c));
    alexnet::save_onnx(*model, pre, dir + "/" + name + ".onnx");
    std::ofstream(dir + "/" + name + ".input.f32", std::ios::binary)
        .write(static_cast<const char*>(x.data_ptr()), static_cast<std::streamsize>(x.nbytes()));
    std::ofstream(dir + "/" + name + ".logits.f32", std::ios::binary)
        .write(static_cast<const char*>(logits.data_ptr()), static_cast<std::streamsize>(logits.nbytes()));
    manifest << (n ? ", " : "") << "{\"name\": \"" << name << "\", \"input\": [2, 3, " << side << ", " << side
             << "], \"logits\": [2, " << options.num_classes() << "]}";
  }
  manifest << "]\n";
  return manifest ? 0 : 1;
}
#endif

// Seconds per call of `step`: the mean over `iterations` after one warm-up, with
// the GPU's queue drained before the clock starts and stops.
double seconds_per(const std::function<void()>& step, int iterations) {
  const bool cuda = torch::cuda::is_available();
  step();
  if (cuda) torch::cuda::synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) step();
  if (cuda) torch::cuda::synchronize();
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return elapsed.count() / iterations;
}

int usage() {
  std::fprintf(stderr,
               "usage: alexnet_bench train|infer|lrn|onnx-reference [--arch A] [--execution E] [--batch N] "
               "[--iterations N] [--threads N] [--keep-memory 0|1] [--device cpu|cuda] [--precision fp32|bf16|fp16] "
               "[--channels-last 0|1] [--tf32 0|1] [--out DIR]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  Args a;
  a.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--arch") a.arch = value;
    else if (flag == "--execution") a.execution = value;
    else if (flag == "--batch") a.batch = std::stoll(value);
    else if (flag == "--iterations") a.iterations = std::stoi(value);
    else if (flag == "--threads") a.threads = std::stoi(value);
    else if (flag == "--keep-memory") a.keep_memory = value == "1";
    else if (flag == "--device") a.device = value;
    else if (flag == "--precision") a.precision = value;
    else if (flag == "--channels-last") a.channels_last = value == "1";
    else if (flag == "--tf32") a.tf32 = value == "1";
    else if (flag == "--out") a.out = value;
    else return usage();
  }
  at::set_num_threads(a.threads);
  if (a.keep_memory) alexnet::use_caching_cpu_allocator();
  alexnet::manual_seed(0);
  // Stated, not left to LibTorch's defaults (TF32 convolutions on, matrix products off).
  alexnet::set_tf32(a.tf32);

  if (a.mode == "onnx-reference") {
#ifdef ALEXNET_INTEROP
    return onnx_reference(a.out.empty() ? "." : a.out);
#else
    std::fprintf(stderr, "alexnet_bench: built without ONNX export (libonnx-dev)\n");
    return 2;
#endif
  }

  if (a.mode == "lrn") {
    // conv1's activations at batch 128 (Section 3.3: LRN after conv1's ReLU).
    const auto x = (torch::randn({a.batch, 96, 55, 55}) * 20).relu_();
    const auto grad = torch::randn_like(x);
    auto ours = [&] {
      auto input = x.detach().requires_grad_(true);
      alexnet::local_response_norm(input, alexnet::LRNOptions::paper(), 2).backward(grad);
    };
    torch::nn::LocalResponseNorm reference(torch::nn::LocalResponseNormOptions(5).alpha(5e-4).beta(0.75).k(2.0));
    auto libtorch = [&] {
      auto input = x.detach().requires_grad_(true);
      reference(input).backward(grad);
    };
    const double t_ours = seconds_per(ours, a.iterations);
    const double t_ref = seconds_per(libtorch, a.iterations);
    std::printf("{\"figure\":\"lrn_forward_backward_ms\",\"shape\":[%lld,96,55,55],\"ours\":%.2f,"
                "\"libtorch\":%.2f,\"speedup\":%.2f,\"threads\":%d,\"keep_memory\":%s}\n",
                static_cast<long long>(a.batch), 1e3 * t_ours, 1e3 * t_ref, t_ref / t_ours, a.threads,
                a.keep_memory ? "true" : "false");
    return 0;
  }

  // Under torchrun's environment (scripts/bench_scaling.sh): data parallel, gradients
  // averaged every step during the backward pass (Gloo; NCCL on GPUs when built in),
  // each rank on its own GPU; rank 0 reports the world's images/s.
  auto dist = alexnet::DistributedOptions::from_environment();
  const bool parallel = dist.world_size > 1;
  const auto device = parallel ? alexnet::rank_devices({c10::Device(a.device)}, dist.local_rank,
                                                       static_cast<int>(torch::cuda::device_count()))
                                     .front()
                               : c10::Device(a.device);
  auto options = alexnet::preset(a.arch).num_classes(1000).devices({device});
  options.execution(alexnet::execution_from_string(a.execution));
  alexnet::AlexNet model(options);
  const auto size = options.input_size();
  auto images = torch::randn({a.batch, 3, size, size}).to(device);
  const auto precision = alexnet::precision_from_string(a.precision);
  const auto labels = torch::randint(0, 1000, {a.batch}).to(device);
  double seconds = 0;
  std::unique_ptr<alexnet::ProcessGroup> group;
  if (parallel) {
    if (device.is_cuda()) dist.cuda_device = device.index();
    dist.backend = "auto";
    group = std::make_unique<alexnet::ProcessGroup>(dist);
  }
  const int world = group ? group->size() : 1;
  if (a.mode == "train") {
    // The loop users run: Trainer::step (autocast, loss scaling, the overlapped
    // all-reduce under data parallelism, the paper's update).
    alexnet::Trainer trainer(model, alexnet::TrainOptions()
                                        .precision(precision)
                                        .channels_last(a.channels_last)
                                        .tf32(a.tf32));
    if (group) trainer.distribute(*group);
    seconds = seconds_per([&] { trainer.step(images, labels); }, a.iterations);
  } else if (a.mode == "infer") {
    if (a.channels_last) {
      images = images.contiguous(at::MemoryFormat::ChannelsLast);
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) {
        if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
      }
    }
    model->eval();
    torch::NoGradGuard no_grad;
    seconds = seconds_per(
        [&] {
          const alexnet::AutocastGuard autocast(device.type(), precision);
          model->forward(images);
        },
        a.iterations);
  } else {
    return usage();
  }
  if (group && group->rank() != 0) return 0;
  std::printf("{\"figure\":\"%s_images_per_s\",\"arch\":\"%s\",\"execution\":\"%s\",\"batch\":%lld,"
              "\"input\":%lld,\"ours\":%.2f,\"threads\":%d,\"keep_memory\":%s,\"device\":\"%s\","
              "\"processes\":%d,\"step_ms\":%.1f,\"precision\":\"%s\",\"channels_last\":%s,"
              "\"backend\":\"%s\",\"tf32\":%s}\n",
              a.mode.c_str(), a.arch.c_str(), a.execution.c_str(), static_cast<long long>(a.batch),
              static_cast<long long>(size), world * a.batch / seconds, a.threads, a.keep_memory ? "true" : "false",
              a.device.c_str(), world, 1e3 * seconds, a.precision.c_str(), a.channels_last ? "true" : "false",
              group ? group->options().backend.c_str() : "none", a.tf32 ? "true" : "false");
  return 0;
}
