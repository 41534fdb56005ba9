#include <alexnet/network/distributed.h>
#include <alexnet/network/numbers.h>

#include <ATen/ATen.h>

// Debian's LibTorch has c10d with Gloo (its headers come from libgloo-dev); a LibTorch
// built without Gloo (USE_C10D_GLOO, which its CMake targets define when it has it) or
// without Gloo's headers (a wheel's include tree may lack them) builds the model
// library without Gloo. NCCL's process group comes in when CMake found that LibTorch has CUDA
// and NCCL and that ProcessGroupNCCL.hpp compiles (ALEXNET_WITH_NCCL). With neither,
// a ProcessGroup refuses worlds larger than one, saying why.
#if defined(USE_C10D_GLOO) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>) && \
    __has_include(<gloo/config.h>)
#define ALEXNET_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef ALEXNET_WITH_NCCL
#define ALEXNET_HAVE_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if defined(ALEXNET_HAVE_GLOO) || defined(ALEXNET_HAVE_NCCL)
#define ALEXNET_HAVE_C10D 1
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <utility>

// LibTorch built with glog (Debian's) logs each failed socket attempt of the
// rendezvous before we can say what went wrong in one line: quiet it meanwhile.
#if defined(C10_USE_GLOG) && __has_include(<glog/logging.h>)
#include <glog/logging.h>
#define ALEXNET_HAVE_GLOG 1
#endif

namespace alexnet {
namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

int env_int(const char* name, int fallback) {
  const auto text = env(name);
  if (text.empty()) return fallback;
  const auto value = to_number<int>(text);
  if (!value) {
    throw std::invalid_argument("environment variable " + std::string(name) + "='" + text + "' is not an integer");
  }
  return *value;
}

[[maybe_unused]] std::string first_line(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10 ? c10->msg() : e.what();
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

[[maybe_unused]] bool loopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0; }

struct QuietSocketLogs {
#ifdef ALEXNET_HAVE_GLOG
  int saved = FLAGS_minloglevel;
  QuietSocketLogs() { FLAGS_minloglevel = google::GLOG_FATAL; }
  ~QuietSocketLogs() { FLAGS_minloglevel = saved; }
#endif
};

}  // namespace

DistributedOptions DistributedOptions::from_environment() {
  DistributedOptions o;
  if (!env("WORLD_SIZE").empty()) {  // torchrun, torch.distributed.launch, and most launchers
    o.world_size = env_int("WORLD_SIZE", 1);
    o.rank = env_int("RANK", 0);
    o.local_rank = env_int("LOCAL_RANK", o.rank);
  } else if (!env("SLURM_NTASKS").empty()) {  // srun
    o.world_size = env_int("SLURM_NTASKS", 1);
    o.rank = env_int("SLURM_PROCID", 0);
    o.local_rank = env_int("SLURM_LOCALID", 0);
  }
  if (!env("MASTER_ADDR").empty()) o.master_addr = env("MASTER_ADDR");
  o.master_port = env_int("MASTER_PORT", o.master_port);
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    throw std::invalid_argument("rank " + std::to_string(o.rank) + " is not in a world of " +
                                std::to_string(o.world_size) + " (RANK / WORLD_SIZE)");
  }
  if (o.master_port < 1 || o.master_port > 65535) {
    throw std::invalid_argument("MASTER_PORT " + std::to_string(o.master_port) + " is not a port");
  }
  return o;
}

bool DistributedOptions::in_environment() {
  return env_int(!env("WORLD_SIZE").empty() ? "WORLD_SIZE" : "SLURM_NTASKS", 1) > 1;
}

std::vector<c10::Device> rank_devices(const std::vector<c10::Device>& devices, int local_rank, int gpus) {
  std::set<c10::DeviceIndex> distinct;
  for (const auto& d : devices) {
    if (d.is_cuda()) distinct.insert(d.has_index() ? d.index() : 0);
  }
  std::vector<c10::Device> mine;
  for (const auto& d : devices) {
    if (!d.is_cuda()) {
      mine.push_back(d);
      continue;
    }
    const int index = (d.has_index() ? d.index() : 0) + local_rank * static_cast<int>(distinct.size());
    if (index >= gpus) {
      throw std::invalid_argument("the replica at LOCAL_RANK " + std::to_string(local_rank) + " needs cuda:" +
                                  std::to_string(index) + " (" + d.str() + " shifted by " +
                                  std::to_string(distinct.size()) + " GPUs per replica), but this machine has " +
                                  std::to_string(gpus) + " GPU" + (gpus == 1 ? "" : "s"));
    }
    mine.emplace_back(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
  }
  return mine;
}

bool ProcessGroup::has_backend(const std::string& backend) {
#ifdef ALEXNET_HAVE_GLOO
  if (backend == "gloo") return true;
#endif
#ifdef ALEXNET_HAVE_NCCL
  if (backend == "nccl") return true;
#endif
  return false;
}

#ifdef ALEXNET_HAVE_C10D

namespace {
#ifdef ALEXNET_HAVE_GLOO
using AnyBackend = c10d::ProcessGroupGloo;
#else
using AnyBackend = c10d::ProcessGroupNCCL;
#endif
}  // namespace

struct ProcessGroup::Impl {
  using Work = decltype(std::declval<AnyBackend&>().barrier());
  c10::intrusive_ptr<c10d::Store> store;
#ifdef ALEXNET_HAVE_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#ifdef ALEXNET_HAVE_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  // nccl: the GPU through which CPU tensors go.
  c10::optional<at::Device> gpu;

  Work allreduce(std::vector<at::Tensor>& list) {
#ifdef ALEXNET_HAVE_NCCL
    if (nccl) return nccl->allreduce(list);
#endif
#ifdef ALEXNET_HAVE_GLOO
    return gloo->allreduce(list);
#else
    throw std::logic_error("no process group");
#endif
  }
  Work broadcast(std::vector<at::Tensor>& list, const c10d::BroadcastOptions& options) {
#ifdef ALEXNET_HAVE_NCCL
    if (nccl) return nccl->broadcast(list, options);
#endif
#ifdef ALEXNET_HAVE_GLOO
    return gloo->broadcast(list, options);
#else
    throw std::logic_error("no process group");
#endif
  }
  // Where the backend can take a tensor that lives on `device`.
  at::Device place(const at::Device& device) const { return gpu && !device.is_cuda() ? *gpu : device; }

  // Overlap state: parameters, their buckets, and the all-reduces in flight.
  struct Slot {
    at::Tensor parameter;
    size_t bucket;
    int64_t offset;
    // CUDA: recorded on the stream that copied this slot's gradient into its bucket.
    std::shared_ptr<c10::Event> copied;
  };
  std::vector<Slot> slots;
  std::vector<at::Tensor> flats;       // one flat buffer per bucket
  std::vector<size_t> sizes, arrived;  // parameters per bucket, gradients in so far
  std::vector<std::vector<size_t>> members;  // per bucket: its slots
  // CUDA: per bucket, the stream its all-reduce is launched from (one per device).
  std::vector<c10::optional<c10::Stream>> launch_streams;
  std::vector<char> got;               // per slot: its gradient arrived this pass
  std::vector<Work> works;
  size_t launched = 0;  // buckets whose all-reduce has started, in order
  std::mutex mutex;

  // After slot i's bucket space has been written on this thread's current stream.
  void mark_copied(size_t i) {
    const auto& flat = flats[slots[i].bucket];
    if (!flat.is_cuda()) return;
    c10::impl::VirtualGuardImpl cuda(c10::DeviceType::CUDA);
    slots[i].copied->record(cuda.getStream(flat.device()));
  }

  // Buckets start in order, each once all its gradients are in. The thread that
  // launches one may be another device's autograd thread, whose current streams know
  // nothing of the copies: c10d orders a collective after the current stream of the
  // tensor's device, so the all-reduce is launched from a stream of that device that
  // first waits on every copy into the bucket (else it could sum last step's gradients).
  void launch_ready() {  // under `mutex`
    while (launched < flats.size() && arrived[launched] == sizes[launched]) {
      c10::OptionalStreamGuard guard;
      if (const auto& stream = launch_streams[launched]) {
        for (const auto i : members[launched]) slots[i].copied->block(*stream);
        guard.reset_stream(*stream);
      }
      std::vector<at::Tensor> list{flats[launched]};
      works.push_back(allreduce(list));
      ++launched;
    }
  }

  // Waits for every collective, turning a peer's death or silence into one line.
  void wait(std::vector<Work>& works, const DistributedOptions& o, const char* what) const {
    try {
      for (auto& work : works) work->wait();
    } catch (const std::exception& e) {
      throw std::runtime_error("data parallel: " + std::string(what) + " failed on rank " + std::to_string(o.rank) +
                               " (another rank stopped, died or did not answer within " +
                               std::to_string(o.timeout.count() / 1000) + " s): " + first_line(e));
    }
  }
};

ProcessGroup::ProcessGroup(const DistributedOptions& o) : options_(o), impl_(std::make_unique<Impl>()) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    throw std::invalid_argument("rank " + std::to_string(o.rank) + " is not in a world of " +
                                std::to_string(o.world_size));
  }
  if (o.backend == "auto") options_.backend = o.cuda_device >= 0 && has_backend("nccl") ? "nccl" : "gloo";
  if (!has_backend(options_.backend)) {
    throw std::invalid_argument("process group backend '" + options_.backend + "' is not available in this build (" +
                                (has_backend("nccl") ? "gloo and nccl are" : "gloo is") + ")");
  }
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(o.master_port);
  // torchrun may hand the workers its own store (always with a static rendezvous, and
  // in PyTorch 2.x with others): then all are clients, and, as PyTorch's workers do,
  // keep to the keys of this attempt, so that a restarted world does not read the last.
  const bool agent_store = env("TORCHELASTIC_USE_AGENT_STORE") == "True";
  store_options.isServer = o.rank == 0 && !agent_store;
  store_options.numWorkers = static_cast<size_t>(o.world_size);
  store_options.waitWorkers = true;
  store_options.timeout = o.timeout;
  const auto where = o.master_addr + ":" + std::to_string(o.master_port);
  const QuietSocketLogs quiet;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
    if (agent_store) {
      const auto attempt = env("TORCHELASTIC_RESTART_COUNT");
      impl_->store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + (attempt.empty() ? "0" : attempt),
                                                            impl_->store);
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(
        o.rank == 0 ? "data parallel: rank 0 could not serve the rendezvous on " + where +
                          " (port in use? set MASTER_PORT), or not all " + std::to_string(o.world_size) +
                          " ranks joined within " + std::to_string(o.timeout.count() / 1000) + " s: " + first_line(e)
                    : "data parallel: rank " + std::to_string(o.rank) + " could not reach the master at " + where +
                          " within " + std::to_string(o.timeout.count() / 1000) + " s: " + first_line(e));
  }
  try {
#ifdef ALEXNET_HAVE_NCCL
    if (options_.backend == "nccl") {
      const int index = o.cuda_device >= 0 ? o.cuda_device : o.local_rank;
      if (index >= static_cast<int>(c10::cuda::device_count())) {
        throw std::invalid_argument("nccl: rank " + std::to_string(o.rank) + " needs cuda:" + std::to_string(index) +
                                    ", but this machine has " + std::to_string(c10::cuda::device_count()) + " GPUs");
      }
      impl_->gpu = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
      // A collective that outlives the timeout throws from wait() (our one-line
      // message) instead of hanging: NCCL's blocking wait, both of its spellings.
      ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
      ::setenv("NCCL_BLOCKING_WAIT", "1", 0);
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = o.timeout;
      impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, o.rank, o.world_size, options);
      return;
    }
#endif
#ifdef ALEXNET_HAVE_GLOO
    auto options = c10d::ProcessGroupGloo::Options::create(o.timeout);
    const auto interface = std::getenv("GLOO_SOCKET_IFNAME");
    options->devices.push_back(interface ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                               : loopback(o.master_addr) ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                                         : c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, o.rank, o.world_size, options);
#endif
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error("data parallel: rank " + std::to_string(o.rank) + " could not connect to the other ranks (" +
                             options_.backend + "): " + first_line(e));
  }
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::average(const std::vector<at::Tensor>& tensors) {
  // Buckets of about bucket_bytes, last tensors first (their gradients are ready first),
  // one dtype and device per bucket.
  std::vector<std::vector<at::Tensor>> buckets;
  int64_t bytes = 0;
  for (auto it = tensors.rbegin(); it != tensors.rend(); ++it) {
    const auto& t = *it;
    if (!t.defined()) continue;
    const bool fits = !buckets.empty() && bytes + static_cast<int64_t>(t.nbytes()) <= options_.bucket_bytes &&
                      buckets.back().front().scalar_type() == t.scalar_type() &&
                      buckets.back().front().device() == t.device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(t);
    bytes += static_cast<int64_t>(t.nbytes());
  }
  std::vector<at::Tensor> flats;
  std::vector<Impl::Work> works;
  for (const auto& bucket : buckets) {
    std::vector<at::Tensor> parts;
    for (const auto& t : bucket) parts.push_back(t.reshape({-1}));
    const auto device = impl_->place(bucket.front().device());
    std::vector<at::Tensor> flat{at::cat(parts).to(device)};
    works.push_back(impl_->allreduce(flat));
    flats.push_back(flat[0]);
  }
  impl_->wait(works, options_, "gradient all-reduce");
  for (size_t b = 0; b < buckets.size(); ++b) {
    flats[b].div_(size());
    int64_t offset = 0;
    for (auto& t : buckets[b]) {
      t.copy_(flats[b].narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

void ProcessGroup::overlap(const std::vector<at::Tensor>& parameters) {
  if (!impl_->slots.empty()) throw std::logic_error("ProcessGroup::overlap: called twice");
  // Last parameters first: backward computes their gradients first.
  int64_t bytes = 0;
  for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
    const auto& p = *it;
    const auto device = impl_->place(p.device());
    const bool fits = !impl_->flats.empty() && bytes + static_cast<int64_t>(p.nbytes()) <= options_.bucket_bytes &&
                      impl_->flats.back().scalar_type() == p.scalar_type() && impl_->flats.back().device() == device;
    if (!fits) {
      impl_->flats.push_back(at::empty({0}, p.options().device(device)));
      impl_->sizes.push_back(0);
      bytes = 0;
    }
    impl_->slots.push_back({p, impl_->flats.size() - 1, impl_->flats.back().numel(), nullptr});
    impl_->flats.back() = at::empty({impl_->flats.back().numel() + p.numel()}, p.options().device(device));
    ++impl_->sizes.back();
    bytes += static_cast<int64_t>(p.nbytes());
  }
  impl_->arrived.assign(impl_->flats.size(), 0);
  impl_->got.assign(impl_->slots.size(), 0);
  impl_->members.assign(impl_->flats.size(), {});
  for (size_t i = 0; i < impl_->slots.size(); ++i) impl_->members[impl_->slots[i].bucket].push_back(i);
  // One launch stream per GPU, from the pool c10d's own streams come from (the towers'
  // come from the other, so the two never coincide).
  std::map<int, c10::Stream> launch_streams;
  for (const auto& flat : impl_->flats) {
    if (!flat.is_cuda()) {
      impl_->launch_streams.emplace_back();
      continue;
    }
    auto found = launch_streams.find(flat.device().index());
    if (found == launch_streams.end()) {
      c10::impl::VirtualGuardImpl cuda(c10::DeviceType::CUDA);
      found = launch_streams.emplace(flat.device().index(), cuda.getStreamFromGlobalPool(flat.device())).first;
    }
    impl_->launch_streams.emplace_back(found->second);
  }
  for (auto& slot : impl_->slots) {
    if (impl_->flats[slot.bucket].is_cuda()) slot.copied = std::make_shared<c10::Event>(c10::DeviceType::CUDA);
  }
  for (size_t i = 0; i < impl_->slots.size(); ++i) {
    auto* impl = impl_.get();
    impl->slots[i].parameter.register_hook([impl, i](const at::Tensor& grad) {
      const auto& slot = impl->slots[i];
      impl->flats[slot.bucket].narrow(0, slot.offset, grad.numel()).view_as(grad).copy_(grad);
      std::lock_guard<std::mutex> lock(impl->mutex);
      impl->mark_copied(i);
      impl->got[i] = 1;
      ++impl->arrived[slot.bucket];
      impl->launch_ready();
    });
  }
}

void ProcessGroup::finish_overlap() {
  {
    // A parameter without a gradient this pass: its slot stays zero, and the buckets
    // still start in order.
    std::lock_guard<std::mutex> lock(impl_->mutex);
    for (size_t i = 0; i < impl_->slots.size(); ++i) {
      if (impl_->got[i]) continue;
      const auto& slot = impl_->slots[i];
      impl_->flats[slot.bucket].narrow(0, slot.offset, slot.parameter.numel()).zero_();
      impl_->mark_copied(i);
      ++impl_->arrived[slot.bucket];
    }
    impl_->launch_ready();
    if (impl_->launched != impl_->flats.size()) {
      throw std::logic_error("ProcessGroup::finish_overlap: a gradient never arrived");
    }
  }
  impl_->wait(impl_->works, options_, "gradient all-reduce");
  for (auto& flat : impl_->flats) flat.div_(size());
  for (auto& slot : impl_->slots) {
    auto& grad = slot.parameter.mutable_grad();
    const auto mean = impl_->flats[slot.bucket].narrow(0, slot.offset, slot.parameter.numel()).view_as(slot.parameter);
    if (grad.defined()) {
      grad.copy_(mean);
    } else {
      grad = mean.to(slot.parameter.device(), /*non_blocking=*/false, /*copy=*/true);
    }
  }
  impl_->works.clear();
  impl_->launched = 0;
  std::fill(impl_->arrived.begin(), impl_->arrived.end(), 0);
  std::fill(impl_->got.begin(), impl_->got.end(), 0);
}

void ProcessGroup::sum(const at::Tensor& tensor) {
  std::vector<at::Tensor> list{tensor.to(impl_->place(tensor.device()))};
  std::vector<Impl::Work> works{impl_->allreduce(list)};
  impl_->wait(works, options_, "all-reduce");
  if (!list[0].is_same(tensor)) tensor.copy_(list[0]);
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors, int root) {
  std::vector<Impl::Work> works;
  std::vector<std::vector<at::Tensor>> lists;
  lists.reserve(tensors.size());
  c10d::BroadcastOptions options;
  options.rootRank = root;
  for (const auto& t : tensors) {
    lists.push_back({t.to(impl_->place(t.device()))});
    works.push_back(impl_->broadcast(lists.back(), options));
  }
  impl_->wait(works, options_, "broadcast");
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!lists[i][0].is_same(tensors[i])) tensors[i].copy_(lists[i][0]);
  }
}

void ProcessGroup::barrier() {
  // A one-element all-reduce: the same for both backends (NCCL's own barrier guesses
  // a GPU from the rank).
  sum(at::zeros({1}));
}

#else  // no c10d backend

struct ProcessGroup::Impl {};

ProcessGroup::ProcessGroup(const DistributedOptions& o) : options_(o), impl_(std::make_unique<Impl>()) {
  if (o.world_size > 1) {
    throw std::runtime_error("data parallel: this build of the library has no c10d process group (its LibTorch "
                             "lacks the Gloo headers and NCCL), so it cannot join a world of " +
                             std::to_string(o.world_size));
  }
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::average(const std::vector<at::Tensor>&) {}
void ProcessGroup::overlap(const std::vector<at::Tensor>&) {}
void ProcessGroup::finish_overlap() {}
void ProcessGroup::sum(const at::Tensor&) {}
void ProcessGroup::broadcast(const std::vector<at::Tensor>&, int) {}
void ProcessGroup::barrier() {}

#endif

}  // namespace alexnet
