// The data benchmark for scripts/bench_data.sh: images per second through the
// pipeline, for a folder of JPEGs or a packed set.
//
//   alexnet_data_bench DATA STATS WORKERS BATCHES [VERIFY]
//
// VERIFY 0 reads a packed set without checking its records' checksums (1, the default,
// checks each record the first time it is read: the cost bench_data.sh reports).

#include <alexnet/network/numbers.h>
#include <alexnet/data.h>
#include <alexnet/network/runtime.h>

#include <ATen/Parallel.h>
#include <torch/data/dataloader.h>

#include <chrono>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: alexnet_data_bench DATA STATS WORKERS BATCHES [VERIFY]\n");
    return 2;
  }
  at::set_num_threads(1);
  alexnet::use_caching_cpu_allocator();
  const std::string data = argv[1];
  const auto stats = alexnet::data::Statistics::load(argv[2]);
  const auto workers = alexnet::parse_number<size_t>("WORKERS", argv[3]);
  const auto batches = alexnet::parse_number<size_t>("BATCHES", argv[4]);
  const bool verify = argc < 6 || std::string(argv[5]) != "0";
  const auto source = alexnet::data::open_source(data, alexnet::data::ReadOptions().verify(verify));
  // The paper's training transforms, at torchvision's crop for a like-for-like count.
  alexnet::data::ImageDataset dataset(source, alexnet::data::TransformOptions().crop(224).seed(1), stats);
  size_t seen = 0;
  std::chrono::steady_clock::time_point start;
  bool started = false;
  for (int64_t epoch = 0; seen < batches * 32; ++epoch) {
    dataset.set_epoch(epoch);
    alexnet::data::EpochSampler sampler(source->size(), 1);
    sampler.set_epoch(epoch);
    auto loader = torch::data::make_data_loader(
        dataset, sampler, torch::data::DataLoaderOptions(32).workers(workers).max_jobs(2 * workers + 2));
    for (auto& batch : *loader) {
      if (!started) {  // after the first batch, as the baseline
        started = true;
        start = std::chrono::steady_clock::now();
        continue;
      }
      seen += static_cast<size_t>(batch.images.size(0));
      if (seen >= batches * 32) break;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"ours\":%.1f,\"workers\":%zu,\"verify\":%s}\n", seen / seconds, workers, verify ? "true" : "false");
  return 0;
}
