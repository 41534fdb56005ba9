#pragma once

// Data parallelism over PyTorch's c10d process groups (Gloo on CPUs, NCCL on GPUs
// when LibTorch has it): one process per replica, rendezvous through a TCPStore at
// MASTER_ADDR:MASTER_PORT, as torchrun and Slurm launch them.
//
//   auto group = alexnet::ProcessGroup(alexnet::DistributedOptions::from_environment());
//   group.broadcast(model->parameters());           // every replica starts from rank 0's weights
//   ...backward...
//   group.average(gradients);                         // bucketed all-reduce / world size
//
// No communication code of our own: c10d does the collectives.

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace alexnet {

struct DistributedOptions {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// How long a collective (or the rendezvous) may wait for the other ranks before
  /// failing with a message: a rank that died or hangs stops the others.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  /// "gloo" (CPU or CUDA tensors), "nccl" (CUDA tensors, when LibTorch has NCCL:
  /// ProcessGroup::has_backend), or "auto": nccl when `cuda_device` is set and this
  /// build has it, else gloo. Under nccl, CPU tensors given to the collectives pass
  /// through this rank's GPU.
  std::string backend = "gloo";
  /// This rank's GPU, if it works on one; under nccl, -1 means cuda:LOCAL_RANK,
  /// torchrun's convention.
  int cuda_device = -1;
  /// Bucket size for gradient all-reduce, in bytes (PyTorch's DDP uses 25 MiB).
  int64_t bucket_bytes = 25 << 20;

  /// From the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
  /// MASTER_PORT) or, failing those, Slurm's (SLURM_PROCID, SLURM_NTASKS,
  /// SLURM_LOCALID). A world of one when none is set. Throws naming a malformed variable.
  static DistributedOptions from_environment();
  /// Whether the environment describes a world of more than one process.
  static bool in_environment();
};

class ProcessGroup {
 public:
  /// Joins the group: rank 0 serves the TCPStore, the others connect to it. Throws a
  /// one-line message when the port is taken or the master cannot be reached within
  /// the timeout.
  explicit ProcessGroup(const DistributedOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  /// Whether this build can make a process group of `backend` ("gloo", "nccl").
  static bool has_backend(const std::string& backend);

  int rank() const { return options_.rank; }
  int size() const { return options_.world_size; }
  const DistributedOptions& options() const { return options_; }

  /// Replaces each tensor by the mean over ranks: flattened into buckets of
  /// `bucket_bytes`, one all-reduce per bucket, all in flight at once.
  void average(const std::vector<at::Tensor>& tensors);
  /// Replaces `tensor` by its sum over ranks.
  void sum(const at::Tensor& tensor);
  /// Overlap: from now on, each backward pass through `parameters` starts averaging
  /// their gradients while it runs: hooks copy each gradient into its bucket as it is
  /// computed, and a bucket's all-reduce starts once all its gradients are in (buckets
  /// start in the same order on every rank). `finish_overlap` then waits and writes the
  /// means into the parameters' `.grad`. Call once; the hooks live as long as the group.
  void overlap(const std::vector<at::Tensor>& parameters);
  /// After a backward pass, under `overlap`: the averaged gradients, in `.grad`.
  void finish_overlap();
  /// Copies rank `root`'s values into every rank's tensors.
  void broadcast(const std::vector<at::Tensor>& tensors, int root = 0);
  void barrier();

 private:
  struct Impl;
  DistributedOptions options_;
  std::unique_ptr<Impl> impl_;
};

/// Whether this process speaks and writes for its world: alone (`group` null) or rank 0.
/// The one rule for which process writes a run's files, logs and reports.
inline bool lead_rank(const ProcessGroup* group) { return !group || group->rank() == 0; }

/// The devices of the replica at `local_rank` when every replica on a machine takes
/// the same number of GPUs: CUDA indices shift by `local_rank` times the number of
/// distinct GPUs in `devices` (so {cuda:0, cuda:1} at local rank 1 is {cuda:2, cuda:3},
/// and {cuda:0} is torchrun's cuda:LOCAL_RANK); CPU devices stay. Throws naming the
/// device when the machine has fewer than `gpus`.
std::vector<c10::Device> rank_devices(const std::vector<c10::Device>& devices, int local_rank, int gpus);

}  // namespace alexnet
