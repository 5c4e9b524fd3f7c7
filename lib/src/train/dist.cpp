#include "kalm/train/dist.h"

#include "kalm/core/launcher.h"

// KALM_HAVE_GLOO and KALM_HAVE_NCCL come from lib/CMakeLists.txt: set when
// c10d's and Gloo's headers were found (pip torch wheels lack Gloo's), and
// when LibTorch has CUDA and NCCL and nccl.h was found. ProcessGroupGloo.hpp
// and ProcessGroupNCCL.hpp are guarded by USE_C10D_GLOO / USE_C10D_NCCL,
// which LibTorch's own build defines.
#ifndef KALM_HAVE_GLOO
#define KALM_HAVE_GLOO 0
#endif
#ifndef KALM_HAVE_NCCL
#define KALM_HAVE_NCCL 0
#endif
#define KALM_HAVE_C10D (KALM_HAVE_GLOO || KALM_HAVE_NCCL)
#if KALM_HAVE_C10D
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if KALM_HAVE_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if KALM_HAVE_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if KALM_HAVE_C10D
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <sstream>
#include <thread>

#include "kalm/error.h"

namespace kalm::train {

#if KALM_HAVE_C10D
struct DataParallel::Impl {
  c10::intrusive_ptr<c10d::Store> store;  // the rendezvous, kept for leader_work
  c10::intrusive_ptr<c10d::Backend> group;
  // NCCL: collectives on the ranks' device; Gloo: on host memory.
  bool on_device = false;
  torch::Device device{torch::kCPU};
  std::int64_t leader_calls = 0;  // leader_work calls so far: each gets its own keys
};
#else
struct DataParallel::Impl {};
#endif

bool gloo_available() { return KALM_HAVE_GLOO != 0; }
bool nccl_available() { return KALM_HAVE_NCCL != 0; }
bool data_parallel_available() { return gloo_available() || nccl_available(); }

std::string_view backend_name(DistBackend backend) { return backend == DistBackend::kNccl ? "nccl" : "gloo"; }

DistBackend resolve_backend(const std::string& name, const torch::Device& device) {
  if (name != "auto" && name != "nccl" && name != "gloo")
    throw UsageError("--dist-backend must be auto, nccl or gloo, got '" + name + "'");
  const bool cuda = device.is_cuda();
  if (name == "nccl" || (name == "auto" && cuda && nccl_available())) {
    if (!cuda) throw UsageError("--dist-backend nccl needs --device cuda (NCCL runs collectives on GPUs)");
    if (!nccl_available())
      throw UsageError("--dist-backend nccl: this kalm was built without NCCL (LibTorch without CUDA/NCCL, or nccl.h "
                       "not found: pip's torch has it in the nvidia-nccl wheel; rebuild with -DKALM_NCCL_INCLUDE_DIR=DIR); "
                       "--dist-backend gloo stages through host memory instead");
    return DistBackend::kNccl;
  }
  if (!gloo_available())
    throw UsageError(std::string("--dist-backend ") + (name == "auto" ? "auto (gloo on " + device.str() + ")" : name) +
                     ": this kalm was built without data parallelism over Gloo, because c10d's Gloo headers were "
                     "not found (pip torch wheels do not ship Gloo's); rebuild with -DKALM_GLOO_INCLUDE_DIR=DIR "
                     "(Gloo's headers, e.g. a checkout at the commit your torch pins)" +
                     (cuda ? "" : ", or run one process"));
  return DistBackend::kGloo;
}

namespace {

std::optional<long long> env_int(const EnvLookup& env, const char* name) {
  const char* value = env(name);
  if (!value) return std::nullopt;
  const std::string text(value);
  try {
    std::size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw UsageError(std::string("environment variable ") + name + "='" + text + "' is not an integer");
}

int checked_int(long long v, const char* what) {
  if (v < 0 || v > 1000000) throw UsageError(std::string(what) + " out of range: " + std::to_string(v));
  return static_cast<int>(v);
}

std::string seconds_text(double s) {
  std::ostringstream out;
  out << s;
  return out.str();
}

}  // namespace

DistOptions resolve_dist(const DistFlags& flags, const EnvLookup& env) {
  DistOptions d;
  d.timeout_s = flags.timeout_s;
  d.backend = flags.backend;
  d.bucket_mb = flags.bucket_mb;
  if (!(flags.bucket_mb >= 0) || !std::isfinite(flags.bucket_mb))
    throw UsageError("--grad-bucket-mb must be a non-negative number of MiB, got " + seconds_text(flags.bucket_mb));
  if (!(flags.timeout_s > 0) || !std::isfinite(flags.timeout_s))
    throw UsageError("--dist-timeout must be a positive number of seconds, got " + seconds_text(flags.timeout_s));

  const core::LaunchEnvironment launch = core::read_launch_environment(env);
  if (flags.world_size) {
    d.world_size = *flags.world_size;
  } else if (launch.world_size) {
    d.world_size = *launch.world_size;
  }
  if (flags.rank) {
    d.rank = *flags.rank;
  } else if (launch.rank) {
    d.rank = *launch.rank;
  }
  d.source = flags.world_size || flags.rank ? "flags" : launch.source.empty() ? "default" : launch.source;
  if (d.world_size < 1) throw UsageError("--world-size must be >= 1, got " + std::to_string(d.world_size));
  if (d.rank < 0 || d.rank >= d.world_size)
    throw UsageError("the rank must lie in [0, world size), got rank " + std::to_string(d.rank) + " of " +
                     std::to_string(d.world_size) + " (from " + d.source + ")");

  if (launch.local_rank) d.local_rank = *launch.local_rank;

  if (d.world_size == 1) return d;  // nothing to meet
  d.store_path = flags.store_path;
  if (!d.store_path.empty()) return d;
  const char* addr = env("MASTER_ADDR");
  const auto port = env_int(env, "MASTER_PORT");
  if (!addr || !*addr || !port)
    throw UsageError("a world size of " + std::to_string(d.world_size) + " (from " + d.source +
                     ") needs a rendezvous: --dist-store FILE (shared by every rank), or MASTER_ADDR and "
                     "MASTER_PORT in the environment (rank 0 serves a TCP store there)");
  if (*port < 1 || *port > 65535)
    throw UsageError("MASTER_PORT must lie in 1..65535, got " + std::to_string(*port));
  d.master_addr = addr;
  d.master_port = static_cast<int>(*port);
  if (const char* agent = env("TORCHELASTIC_USE_AGENT_STORE")) d.agent_store = std::string(agent) == "True";
  if (auto restarts = env_int(env, "TORCHELASTIC_RESTART_COUNT"))
    d.restart_count = checked_int(*restarts, "TORCHELASTIC_RESTART_COUNT");
  return d;
}

#if !KALM_HAVE_C10D

DataParallel::DataParallel(const DistOptions& options, const torch::Device& device)
    : impl_(std::make_unique<Impl>()), options_(options) {
  backend_ = resolve_backend(options.backend, device);  // throws: this build has no backend
  KALM_ASSERT(false, "no data parallelism in this build");
}
DataParallel::~DataParallel() = default;
torch::Tensor DataParallel::all_gather_rows(const torch::Tensor&) { KALM_ASSERT(false, "no data parallelism in this build"); return {}; }
void DataParallel::all_reduce_gradients(const std::vector<torch::Tensor>&) { KALM_ASSERT(false, "no data parallelism in this build"); }
std::int64_t DataParallel::all_max(std::int64_t) { KALM_ASSERT(false, "no data parallelism in this build"); return 0; }
void DataParallel::barrier(const char*) { KALM_ASSERT(false, "no data parallelism in this build"); }
void DataParallel::leader_work(const char*, const std::function<void()>&) {
  KALM_ASSERT(false, "no data parallelism in this build");
}

struct GradientBuckets::Impl {};
GradientBuckets::GradientBuckets(DataParallel&, const std::vector<torch::Tensor>&, double) {
  KALM_ASSERT(false, "no data parallelism in this build");
}
GradientBuckets::~GradientBuckets() = default;
void GradientBuckets::arm() {}
void GradientBuckets::finish() {}
GradientBuckets::Counts GradientBuckets::last_counts() const { return {}; }

#else

namespace {

// Runs one c10d call, turning its failure into a kalm::Error that says which
// collective failed on which rank, and why that usually happens.
template <typename F>
auto guarded(const DistOptions& o, const char* what, F&& f) {
  auto fail = [&](const std::string& why) {
    return Error("data parallel " + std::string(what) + " failed on rank " + std::to_string(o.rank) + " of " +
                 std::to_string(o.world_size) + ": a peer may have died or stalled (--dist-timeout " +
                 seconds_text(o.timeout_s) + " s): " + why);
  };
  try {
    return f();
  } catch (const kalm::Error&) {
    throw;
  } catch (const c10::Error& e) {
    // what() carries a C++ backtrace; the user needs the message.
    throw fail(e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw fail(e.what());
  }
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(seconds * 1000.0)));
}

c10::intrusive_ptr<c10d::Store> make_store(const DistOptions& o, std::chrono::milliseconds timeout) {
  c10::intrusive_ptr<c10d::Store> store;
  if (!o.store_path.empty()) {
    store = c10::make_intrusive<c10d::FileStore>(o.store_path, o.world_size);
  } else if (o.master_addr.empty() && o.world_size == 1) {
    store = c10::make_intrusive<c10d::HashStore>();  // one process: nothing to meet
  } else {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o.master_port);
    so.isServer = !o.agent_store && o.rank == 0;
    so.numWorkers = static_cast<std::size_t>(o.world_size);
    so.waitWorkers = false;  // the backend's own connect waits (with the timeout) and names what is missing
    so.timeout = timeout;
    so.multiTenant = !o.agent_store;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    store = tcp;
    if (o.agent_store)
      store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(o.restart_count), tcp);
  }
  store->setTimeout(timeout);
  return store;
}

#if KALM_HAVE_GLOO
c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, const DistOptions& o,
                                             std::chrono::milliseconds timeout) {
  auto gloo = c10d::ProcessGroupGloo::Options::create(timeout);
  // GLOO_SOCKET_IFNAME picks the network interface(s) across hosts, as in PyTorch.
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname && *ifname) {
    std::stringstream names(ifname);
    std::string name;
    while (std::getline(names, name, ','))
      if (!name.empty()) gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
  }
  if (gloo->devices.empty()) gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, gloo);
}
#endif

#if KALM_HAVE_NCCL
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store, const DistOptions& o,
                                             std::chrono::milliseconds timeout, const torch::Device& device) {
  // NCCL binds a communicator to the current device: this rank's GPU.
  c10::cuda::set_device(device.index());
  auto nccl = c10d::ProcessGroupNCCL::Options::create();
  nccl->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.world_size, nccl);
}
#endif

}  // namespace

DataParallel::DataParallel(const DistOptions& options, const torch::Device& device)
    : impl_(std::make_unique<Impl>()), options_(options) {
  const auto& o = options_;
  backend_ = resolve_backend(o.backend, device);
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    throw UsageError("--rank must lie in [0, --world-size), got rank " + std::to_string(o.rank) + " of " +
                     std::to_string(o.world_size));
  if (o.world_size > 1 && o.store_path.empty() &&
      (o.master_addr.empty() || o.master_port < 1 || o.master_port > 65535))
    throw UsageError("--world-size > 1 needs --dist-store FILE (shared by every rank) or MASTER_ADDR and "
                     "MASTER_PORT in the environment");
  if (!(o.timeout_s > 0)) throw UsageError("--dist-timeout must be positive");
  const auto timeout = to_ms(o.timeout_s);
  std::string where = o.store_path.empty() ? (o.master_addr.empty() ? std::string("in-memory rendezvous")
                                                                    : "rendezvous at " + o.master_addr + ":" +
                                                                          std::to_string(o.master_port))
                                           : "rendezvous through " + o.store_path;
  where += std::string(" (") + std::string(backend_name(backend_)) + ")";
  // A launcher's variables can be a surprise (a batch script run outside srun).
  if (o.source != "flags") where += " (rank and world size from " + o.source + ")";
  impl_->device = device;
  guarded(o, where.c_str(), [&] {
    const auto store = make_store(o, timeout);
    impl_->store = store;
#if KALM_HAVE_NCCL
    if (backend_ == DistBackend::kNccl) {
      impl_->group = make_nccl(store, o, timeout, device);
      impl_->on_device = true;
      return 0;
    }
#endif
#if KALM_HAVE_GLOO
    impl_->group = make_gloo(store, o, timeout);
#endif
    return 0;
  });
}

DataParallel::~DataParallel() {
#if KALM_HAVE_NCCL
  // NCCL's communicators are finalised here, as PyTorch's
  // destroy_process_group() does (the group's destructor warns otherwise);
  // while an error unwinds the stack a peer may be gone, so they are aborted
  // rather than finalised (which could wait for that peer).
  if (impl_ && impl_->group && backend_ == DistBackend::kNccl) {
    try {
      if (std::uncaught_exceptions() > 0)
        impl_->group->abort();
      else
        impl_->group->shutdown();
    } catch (...) {  // nothing a destructor could do about it
    }
  }
#endif
}

torch::Tensor DataParallel::all_gather_rows(const torch::Tensor& local) {
  return guarded(options_, "all_gather of embeddings", [&] {
    // NCCL gathers on the rank's GPU, whatever device the rows are on (a
    // teacher's scores arrive on the host); Gloo works on host memory, so a
    // GPU rank's rows travel through it. The result is on the rows' device.
    const torch::Device where = impl_->on_device ? impl_->device : torch::Device(torch::kCPU);
    std::vector<torch::Tensor> input{local.detach().to(where).contiguous()};
    std::vector<std::vector<torch::Tensor>> output(1);
    for (int r = 0; r < options_.world_size; ++r) output[0].push_back(torch::empty_like(input[0]));
    impl_->group->allgather(output, input)->wait();
    for (auto& part : output[0]) part = part.to(local.device());
    output[0][static_cast<std::size_t>(options_.rank)] = local;
    return torch::cat(output[0], 0);
  });
}

void DataParallel::all_reduce_gradients(const std::vector<torch::Tensor>& params) {
  guarded(options_, "all_reduce of gradients", [&] {
    std::vector<torch::Tensor> grads;
    for (const auto& p : params)
      if (p.grad().defined()) grads.push_back(p.grad());
    if (grads.empty()) return 0;
    // One flat buffer: one collective instead of one per tensor. NCCL reduces
    // it on the GPU; Gloo on host memory (a GPU rank's gradients travel
    // through it).
    std::vector<torch::Tensor> views;
    for (auto& g : grads) views.push_back(g.reshape({-1}));
    torch::Tensor flat = torch::cat(views);
    if (!impl_->on_device) flat = flat.to(torch::kCPU);
    std::vector<torch::Tensor> buffer{flat};
    impl_->group->allreduce(buffer)->wait();
    std::int64_t offset = 0;
    for (auto& g : grads) {
      const auto n = g.numel();
      g.copy_(buffer[0].slice(0, offset, offset + n).view_as(g));
      offset += n;
    }
    return 0;
  });
}

std::int64_t DataParallel::all_max(std::int64_t value) {
  return guarded(options_, "all_reduce (max)", [&] {
    const torch::Device where = impl_->on_device ? impl_->device : torch::Device(torch::kCPU);
    std::vector<torch::Tensor> t{torch::full({1}, value, torch::TensorOptions().dtype(torch::kLong).device(where))};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::MAX;
    impl_->group->allreduce(t, options)->wait();
    return t[0].item<std::int64_t>();  // waits for the device under NCCL
  });
}

void DataParallel::barrier(const char* what) {
  guarded(options_, what, [&] {
    if (impl_->on_device) {
      // An all-reduce read back on the host: every rank has reached it when
      // the read returns (NCCL's own barrier guesses the device).
      std::vector<torch::Tensor> t{torch::zeros({1}, torch::TensorOptions().dtype(torch::kInt).device(impl_->device))};
      impl_->group->allreduce(t)->wait();
      (void)t[0].item<int>();
    } else {
      impl_->group->barrier()->wait();
    }
    return 0;
  });
}

namespace {
std::vector<std::uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }
std::string text_of(const std::vector<std::uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }
}  // namespace

void DataParallel::leader_work(const char* what, const std::function<void()>& work) {
  const std::string prefix = "kalm/leader_work/" + std::to_string(impl_->leader_calls++) + "/";
  const std::string alive_key = prefix + "alive", done_key = prefix + "done";
  c10d::Store& store = *impl_->store;
  // Rank 0's sign of life: often enough that a waiting rank sees several
  // within any timeout, rarely enough to cost nothing.
  const auto period = std::chrono::milliseconds(
      std::clamp<std::int64_t>(to_ms(options_.timeout_s).count() / 4, 10, 1000));
  if (options_.rank == 0) {
    guarded(options_, what, [&] {
      store.set(alive_key, bytes_of("0"));
      return 0;
    });
    std::mutex mutex;
    std::condition_variable wake;
    bool finished = false;
    std::thread beat([&] {
      std::unique_lock<std::mutex> lock(mutex);
      for (std::int64_t n = 1; !wake.wait_for(lock, period, [&] { return finished; }); ++n) {
        try {
          store.set(alive_key, bytes_of(std::to_string(n)));
        } catch (...) {  // a store that went away: the others find out on their own
        }
      }
    });
    std::exception_ptr failure;
    std::string outcome = "ok";
    try {
      work();
    } catch (const std::exception& e) {
      failure = std::current_exception();
      outcome = std::string("failed: ") + e.what();
    } catch (...) {
      failure = std::current_exception();
      outcome = "failed: an unknown error";
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      finished = true;
    }
    wake.notify_all();
    beat.join();
    try {
      guarded(options_, what, [&] {
        store.set(done_key, bytes_of(outcome));
        return 0;
      });
    } catch (...) {
      if (!failure) throw;  // the work's own error is the one worth reporting
    }
    if (failure) std::rethrow_exception(failure);
    return;
  }
  guarded(options_, what, [&] {
    const auto fail = [&](const std::string& why) {
      return Error("data parallel " + std::string(what) + " failed on rank " + std::to_string(options_.rank) +
                   " of " + std::to_string(options_.world_size) + ": " + why);
    };
    store.wait({alive_key});  // rank 0's arrival, within the store's timeout (--dist-timeout)
    std::string last_beat = text_of(store.get(alive_key));
    auto last_change = std::chrono::steady_clock::now();
    for (;;) {
      if (store.check({done_key})) {
        const std::string outcome = text_of(store.get(done_key));
        if (outcome == "ok") return 0;
        throw fail("rank 0 " + outcome);
      }
      std::this_thread::sleep_for(period);
      std::string beat = text_of(store.get(alive_key));
      const auto now = std::chrono::steady_clock::now();
      if (beat != last_beat) {
        last_beat = std::move(beat);
        last_change = now;
      } else if (now - last_change > to_ms(options_.timeout_s)) {
        throw fail("rank 0 showed no sign of life for --dist-timeout " + seconds_text(options_.timeout_s) +
                   " s (it died, hangs or is stopped)");
      }
    }
  });
}

struct GradientBuckets::Impl {
  struct Bucket {
    std::vector<torch::Tensor> params;
    std::int64_t pending = 0;               // parameters the armed backward has not finished
    std::vector<torch::Tensor> grads;       // the gradients in the buffer, in its order
    std::vector<torch::Tensor> buffer;      // one flat tensor (c10d takes a list)
    c10::intrusive_ptr<c10d::Work> work;
  };
  DataParallel* group = nullptr;
  std::vector<Bucket> buckets;
  // Kept alive: a parameter whose accumulator is freed gets a new one, without the hook.
  // (std::shared_ptr in older LibTorch, c10::intrusive_ptr in newer.)
  using Accumulator = decltype(torch::autograd::impl::grad_accumulator(std::declval<const torch::Tensor&>()));
  std::vector<Accumulator> accumulators;
  std::vector<std::uintptr_t> hook_keys;
  std::mutex mutex;
  bool armed = false;
  std::size_t next_launch = 0;  // buckets [0, next_launch) are launched
  Counts counts, last;

  // Flattens bucket k's defined gradients and launches its all-reduce. Caller holds the mutex.
  void launch(std::size_t k, bool in_backward) {
    Bucket& b = buckets[k];
    b.grads.clear();
    b.buffer.clear();
    b.work.reset();
    for (const auto& p : b.params)
      if (p.grad().defined()) b.grads.push_back(p.grad());
    if (!b.grads.empty()) {
      guarded(group->options_, "all_reduce of gradients", [&] {
        std::vector<torch::Tensor> views;
        for (const auto& g : b.grads) views.push_back(g.reshape({-1}));
        torch::Tensor flat = torch::cat(views);
        if (!group->impl_->on_device) flat = flat.to(torch::kCPU);
        b.buffer.push_back(flat);
        b.work = group->impl_->group->allreduce(b.buffer);
        return 0;
      });
    }
    ++(in_backward ? counts.launched_in_backward : counts.launched_at_finish);
  }

  void launch_ready(bool in_backward) {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) launch(next_launch++, in_backward);
  }

  void finished(std::size_t k) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed) return;  // an earlier backward of the step: its gradients are not final
    // One accumulation per parameter per backward; a second would change a
    // gradient already in flight.
    KALM_ASSERT(buckets[k].pending > 0, "a gradient was accumulated twice in one armed backward");
    if (--buckets[k].pending == 0) launch_ready(true);
  }
};

GradientBuckets::GradientBuckets(DataParallel& group, const std::vector<torch::Tensor>& params, double bucket_mb)
    : impl_(std::make_unique<Impl>()) {
  KALM_ASSERT(bucket_mb > 0, "gradient buckets need a positive size");
  impl_->group = &group;
  const double cap = bucket_mb * 1024.0 * 1024.0;
  double filled = 0;
  Impl& self = *impl_;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const torch::Tensor& p = *it;
    if (!p.requires_grad()) continue;
    const double bytes = static_cast<double>(p.numel() * p.element_size());
    const bool start = self.buckets.empty() || filled + bytes > cap ||
                       self.buckets.back().params.back().scalar_type() != p.scalar_type() ||
                       self.buckets.back().params.back().device() != p.device();
    if (start) {
      self.buckets.emplace_back();
      filled = 0;
    }
    self.buckets.back().params.push_back(p);
    filled += bytes;
  }
  for (std::size_t k = 0; k < self.buckets.size(); ++k)
    for (const auto& p : self.buckets[k].params) {
      auto accumulator = torch::autograd::impl::grad_accumulator(p);
      KALM_ASSERT(accumulator, "a trainable parameter without a gradient accumulator");
      Impl* impl = impl_.get();
      self.hook_keys.push_back(accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [impl, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
            impl->finished(k);
            return outputs;
          })));
      self.accumulators.push_back(std::move(accumulator));
    }
  self.counts.buckets = self.last.buckets = static_cast<std::int64_t>(self.buckets.size());
}

GradientBuckets::~GradientBuckets() {
  for (std::size_t i = 0; i < impl_->accumulators.size(); ++i)
    impl_->accumulators[i]->del_post_hook(impl_->hook_keys[i]);
}

void GradientBuckets::arm() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (auto& b : impl_->buckets) {
    b.pending = static_cast<std::int64_t>(b.params.size());
    b.work.reset();
  }
  impl_->next_launch = 0;
  impl_->counts = Counts{};
  impl_->counts.buckets = static_cast<std::int64_t>(impl_->buckets.size());
  impl_->armed = true;
}

void GradientBuckets::finish() {
  Impl& self = *impl_;
  {
    std::lock_guard<std::mutex> lock(self.mutex);
    if (!self.armed) {  // no backward was armed (nothing to overlap): reduce every bucket now
      self.next_launch = 0;
      self.counts = Counts{};
      self.counts.buckets = static_cast<std::int64_t>(self.buckets.size());
    }
    self.armed = false;
    for (auto& b : self.buckets) b.pending = 0;
    self.launch_ready(false);
  }
  guarded(self.group->options_, "all_reduce of gradients", [&] {
    for (auto& b : self.buckets) {
      if (!b.work) continue;
      b.work->wait();
      std::int64_t offset = 0;
      for (auto& g : b.grads) {
        const auto n = g.numel();
        g.copy_(b.buffer[0].slice(0, offset, offset + n).view_as(g));
        offset += n;
      }
      b.work.reset();
      b.buffer.clear();
      b.grads.clear();
    }
    return 0;
  });
  self.last = self.counts;
}

GradientBuckets::Counts GradientBuckets::last_counts() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->last;
}

#endif  // KALM_HAVE_C10D

}  // namespace kalm::train
