#include "helpers.h"

#include <alexnet/model.h>
#include <alexnet/runtime.h>

#include <catch2/catch.hpp>

TEST_CASE("The caching CPU allocator reuses large blocks and leaves results unchanged", "[runtime]") {
  torch::manual_seed(13);
  alexnet::AlexNet model(alexnet::AlexNetOptions::caffe().input_size(99).num_classes(5));
  model->eval();  // no dropout: the two forward passes must agree exactly
  const auto x = at::randn({4, 3, 99, 99}) * 50;
  const auto before = model->forward(x).detach();

  alexnet::use_caching_cpu_allocator();
  alexnet::use_caching_cpu_allocator();  // idempotent
  const void* first = nullptr;
  {
    const auto big = at::empty({3 << 20});  // 12 MiB
    first = big.data_ptr();
  }
  CHECK(alexnet::cached_cpu_bytes() >= (size_t(12) << 20));
  {
    const auto again = at::ones({3 << 20});
    CHECK(again.data_ptr() == first);
    CHECK(again.sum().item<float>() == float(3 << 20));
  }
  // Small blocks go to LibTorch's allocator and are not cached.
  const auto cached = alexnet::cached_cpu_bytes();
  { const auto small = at::ones({16}); }
  CHECK(alexnet::cached_cpu_bytes() == cached);

  // Training steps through the allocator compute the same numbers.
  const auto after = model->forward(x);
  CHECK(at::equal(after, before));
  after.sum().backward();
  for (const auto& p : model->parameters()) CHECK(p.grad().isfinite().all().item<bool>());
}
