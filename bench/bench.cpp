// Timings for scripts/bench.sh: prints one JSON object per line with images/s or
// milliseconds. The baseline (bench/baseline.py) measures the same work in Python.
//
//   alexnet_bench train|infer --arch paper|caffe|torchvision [--execution grouped|towers]
//   alexnet_bench lrn           conv1-sized LRN forward+backward: ours and LibTorch's
//   alexnet_bench pool          conv1-sized overlapping max pooling: ours and LibTorch's
//   alexnet_bench gemm          GFLOP/s of a 4096 x 4096 matrix product (at::mm and as a 1 x 1
//                               convolution): the roofline
//   alexnet_bench onnx-reference --out DIR   ONNX models with inputs and our logits, for
//                               ONNX Runtime where a GPU is (scripts/device_check.sh)

#include <alexnet/network/distributed.h>
#include <alexnet/network/lrn.h>
#include <alexnet/network/model.h>
#ifdef ALEXNET_INTEROP
#include <alexnet/interop/onnx.h>
#include <alexnet/network/preprocessing.h>
#endif
#include <alexnet/network/pooling.h>
#include <alexnet/network/numbers.h>
#include <alexnet/network/precision.h>
#include <alexnet/network/runtime.h>
#include <alexnet/network/summary.h>
#include <alexnet/network/trainer.h>

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/profiler_legacy.h>
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
  std::string profile;  // chrome trace of one more step (LibTorch's profiler)
};

#ifdef ALEXNET_INTEROP
// Networks that compress well (weights of three values, scaled to keep activations in
// range; biases 0), so that they travel small to a machine with a GPU: DIR/NAME.onnx,
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
               "usage: alexnet_bench train|infer|lrn|pool|gemm|onnx-reference [--arch A] [--execution E] [--batch N] "
               "[--iterations N] [--threads N] [--keep-memory 0|1] [--device cpu|cuda] [--precision fp32|bf16|fp16] "
               "[--channels-last 0|1] [--tf32 0|1] [--out DIR] [--profile TRACE.json]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc % 2 != 0) return usage();  // a mode, then flags each with a value
  Args a;
  a.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--arch") a.arch = value;
    else if (flag == "--execution") a.execution = value;
    else if (flag == "--batch") a.batch = alexnet::parse_number<int64_t>("--batch", value);
    else if (flag == "--iterations") a.iterations = alexnet::parse_number<int>("--iterations", value);
    else if (flag == "--threads") a.threads = alexnet::parse_number<int>("--threads", value);
    else if (flag == "--keep-memory") a.keep_memory = value == "1";
    else if (flag == "--device") a.device = value;
    else if (flag == "--precision") a.precision = value;
    else if (flag == "--channels-last") a.channels_last = value == "1";
    else if (flag == "--tf32") a.tf32 = value == "1";
    else if (flag == "--out") a.out = value;
    else if (flag == "--profile") a.profile = value;
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
    // conv1's activations at batch 128 (Section 3.3: LRN after conv1's ReLU), in the
    // precision and layout a training step gives it. LibTorch's module runs in float32
    // on the same values (its bfloat16 path is a float32 composite too).
    auto x = (torch::randn({a.batch, 96, 55, 55}) * 20).relu_();
    if (a.precision == "bf16") x = x.to(torch::kBFloat16);
    if (a.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    const auto grad = torch::randn_like(x);
    auto ours = [&] {
      auto input = x.detach().requires_grad_(true);
      alexnet::local_response_norm(input, alexnet::LRNOptions::paper(), 2).backward(grad);
    };
    auto ours_forward = [&] { alexnet::local_response_norm(x, alexnet::LRNOptions::paper(), 2); };
    torch::nn::LocalResponseNorm reference(torch::nn::LocalResponseNormOptions(5).alpha(5e-4).beta(0.75).k(2.0));
    const auto x_ref = x.to(torch::kFloat);
    const auto grad_ref = grad.to(torch::kFloat);
    auto libtorch = [&] {
      auto input = x_ref.detach().requires_grad_(true);
      reference(input).backward(grad_ref);
    };
    const double t_ours = seconds_per(ours, a.iterations);
    const double t_ref = seconds_per(libtorch, a.iterations);
    const double f_ours = seconds_per(ours_forward, a.iterations);
    std::printf("{\"figure\":\"lrn_forward_backward_ms\",\"shape\":[%lld,96,55,55],\"precision\":\"%s\","
                "\"channels_last\":%s,\"ours\":%.2f,\"libtorch\":%.2f,\"speedup\":%.2f,\"forward_ours\":%.2f,"
                "\"threads\":%d,\"keep_memory\":%s}\n",
                static_cast<long long>(a.batch), a.precision.c_str(), a.channels_last ? "true" : "false", 1e3 * t_ours,
                1e3 * t_ref, t_ref / t_ours, 1e3 * f_ours, a.threads, a.keep_memory ? "true" : "false");
    return 0;
  }

  if (a.mode == "gemm") {
    // The roofline: the faster of a square matrix product (LibTorch's at::mm: oneDNN
    // for bfloat16, its BLAS for float32) and the same product as a convolution (oneDNN)
    // at the precision and thread count the networks run at.
    const int64_t n = 4096;
    const auto dtype = a.precision == "bf16" ? torch::kBFloat16 : torch::kFloat;
    const auto x = torch::randn({n, n}).to(dtype);
    const auto y = torch::randn({n, n}).to(dtype);
    auto out = torch::empty({n, n}, x.options());
    const double mm = seconds_per([&] { torch::mm_out(out, x, y); }, a.iterations);
    // The same product as a 1 x 1 convolution (oneDNN in either precision): [n, n]
    // weights over n channels of a 64 x 64 map, n x n x 4096 multiply-adds.
    const auto maps = torch::randn({1, n, 64, 64}).to(dtype);
    const auto kernels = x.view({n, n, 1, 1});
    const double conv = seconds_per([&] { torch::conv2d(maps, kernels); }, a.iterations);
    const double mm_rate = 2.0 * n * n * n / mm / 1e9;
    const double conv_rate = 2.0 * n * n * 4096 / conv / 1e9;
    std::printf("{\"figure\":\"gemm_gflop_per_s\",\"n\":%lld,\"precision\":\"%s\",\"gflop_per_s\":%.1f,\"mm\":%.1f,"
                "\"conv1x1\":%.1f,\"threads\":%d}\n",
                static_cast<long long>(n), a.precision.c_str(), std::max(mm_rate, conv_rate), mm_rate, conv_rate,
                a.threads);
    return 0;
  }

  if (a.mode == "pool") {
    // Overlapping pooling after conv1's LRN at batch 128 (Section 3.4: z = 3, s = 2).
    auto x = (torch::randn({a.batch, 96, 55, 55}) * 20).relu_();
    if (a.precision == "bf16") x = x.to(torch::kBFloat16);
    if (a.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    const auto grad = torch::randn({a.batch, 96, 27, 27}).to(x.scalar_type());
    auto ours = [&] {
      auto input = x.detach().requires_grad_(true);
      alexnet::max_pool2d(input, 3, 2).backward(grad);
    };
    auto libtorch = [&] {
      auto input = x.detach().requires_grad_(true);
      torch::max_pool2d(input, {3, 3}, {2, 2}).backward(grad);
    };
    auto ours_forward = [&] { alexnet::max_pool2d(x, 3, 2); };
    auto libtorch_forward = [&] { torch::max_pool2d(x, {3, 3}, {2, 2}); };
    const double t_ours = seconds_per(ours, a.iterations);
    const double t_ref = seconds_per(libtorch, a.iterations);
    const double f_ours = seconds_per(ours_forward, a.iterations);
    const double f_ref = seconds_per(libtorch_forward, a.iterations);
    std::printf("{\"figure\":\"max_pool_forward_backward_ms\",\"shape\":[%lld,96,55,55],\"precision\":\"%s\","
                "\"channels_last\":%s,\"ours\":%.2f,\"libtorch\":%.2f,\"speedup\":%.2f,"
                "\"forward_ours\":%.2f,\"forward_libtorch\":%.2f,\"threads\":%d}\n",
                static_cast<long long>(a.batch), a.precision.c_str(), a.channels_last ? "true" : "false",
                1e3 * t_ours, 1e3 * t_ref, t_ref / t_ours, 1e3 * f_ours, 1e3 * f_ref, a.threads);
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
  options.execution(alexnet::parse<alexnet::Execution>("execution", a.execution));
  alexnet::AlexNet model(options);
  const auto size = options.input_size();
  auto images = torch::randn({a.batch, 3, size, size}).to(device);
  const auto precision = alexnet::parse<alexnet::Precision>("precision", a.precision);
  const auto labels = torch::randint(0, 1000, {a.batch}).to(device);
  const bool channels_last = alexnet::runs_channels_last(device, a.channels_last);
  std::function<void()> step;
  std::unique_ptr<alexnet::Trainer> trainer;
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
    trainer = std::make_unique<alexnet::Trainer>(
        model, alexnet::TrainerOptions().precision(precision).channels_last(a.channels_last).tf32(a.tf32));
    if (group) trainer->distribute(*group);
    step = [&] { trainer->step(images, labels); };
  } else if (a.mode == "infer") {
    // As load_for_inference leaves a model: bf16 weights (no casts per forward pass),
    // the convolutions' channels-last.
    const auto dtype = precision == alexnet::Precision::kBf16   ? torch::kBFloat16
                       : precision == alexnet::Precision::kFp16 ? torch::kHalf
                                                                : torch::kFloat;
    images = images.to(dtype);
    if (channels_last) images = images.contiguous(at::MemoryFormat::ChannelsLast);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) {
        auto data = p.data().to(dtype);
        if (channels_last && p.dim() == 4) data = data.contiguous(at::MemoryFormat::ChannelsLast);
        p.set_data(data);
      }
    }
    model->eval();
    step = [&] {
      torch::NoGradGuard no_grad;
      const alexnet::AutocastGuard autocast(device.type(), precision);
      model->forward(images);
    };
  } else {
    return usage();
  }
  const double seconds = seconds_per(step, a.iterations);
  if (!a.profile.empty()) {
    torch::autograd::profiler::RecordProfile trace(a.profile);
    step();
  }
  if (group && group->rank() != 0) return 0;
  std::printf("{\"figure\":\"%s_images_per_s\",\"arch\":\"%s\",\"execution\":\"%s\",\"batch\":%lld,"
              "\"input\":%lld,\"ours\":%.2f,\"threads\":%d,\"keep_memory\":%s,\"device\":\"%s\","
              "\"processes\":%d,\"step_ms\":%.1f,\"precision\":\"%s\",\"channels_last\":%s,"
              "\"backend\":\"%s\",\"tf32\":%s,\"mult_adds\":%lld}\n",
              a.mode.c_str(), a.arch.c_str(), a.execution.c_str(), static_cast<long long>(a.batch),
              static_cast<long long>(size), world * a.batch / seconds, a.threads, a.keep_memory ? "true" : "false",
              a.device.c_str(), world, 1e3 * seconds, a.precision.c_str(), channels_last ? "true" : "false",
              group ? group->options().backend.c_str() : "none", a.tf32 ? "true" : "false",
              static_cast<long long>(alexnet::summarize(*model).macs));
  return 0;
}
