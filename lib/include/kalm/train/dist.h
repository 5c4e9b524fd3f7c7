#pragma once
// Data parallelism over a c10d process group: one process per rank. Two
// backends (--dist-backend):
//   nccl  CUDA ranks: every collective runs on the GPU, on the tensors where
//         they live (no host staging). Built when LibTorch has NCCL and its
//         headers are found (pip's torch: the nvidia-nccl wheel beside it).
//   gloo  CPU ranks, and CUDA ranks of a build without NCCL: Gloo works on
//         host memory, so a GPU rank's embeddings and gradients are staged
//         through the CPU.
// auto (the default) is nccl when the device is CUDA and this build has it,
// else gloo.
//
// Rendezvous: a c10d FileStore on a file every rank can reach (--dist-store),
// or a c10d TCPStore at MASTER_ADDR:MASTER_PORT served by rank 0 (how torchrun
// --no-python and Slurm batch scripts launch). Under torchrun's static
// rendezvous (TORCHELASTIC_USE_AGENT_STORE=True) the agent already serves the
// store, so every rank joins it as a client under "/worker/attempt_N", as
// PyTorch's own env:// rendezvous does.
//
// How the trainer uses it: every rank plans and samples the same global batch
// (B x world groups; same seed), embeds only its own slice, all-gathers the
// embeddings so the loss sees every rank's negatives (cross-device negatives,
// KaLM's negatives_cross_device), backpropagates into its own slice, and sums
// the gradients over ranks (the loss is the global mean, so the sum of the
// ranks' partial gradients is its gradient) in buckets launched during
// backward (GradientBuckets) or in one flat buffer after it. Weights stay identical on every
// rank; rank 0 alone writes checkpoints, metrics and the export.
//
// Failure: the store and every collective give up after DistOptions::timeout_s,
// so a rank that died or hangs makes the others stop with an error (a killed
// peer usually closes its sockets, which Gloo reports at once) instead of
// waiting forever. Under NCCL a collective is queued on the GPU and returns at
// once; NCCL's watchdog (TORCH_NCCL_ASYNC_ERROR_HANDLING, PyTorch's default)
// ends the process with an error when one exceeds the timeout. While rank 0
// writes a checkpoint the others wait in the store, not in a collective
// (leader_work): a long write neither trips that watchdog nor needs a longer
// timeout.
//
// World size 1: with no rendezvous given, the group lives in memory (a c10d
// HashStore); this is how a one-GPU NCCL run is compared with a plain run.
//
// Thread safety: one DataParallel per process, used from the training thread.
// Errors: c10d/Gloo failures (a rank that died, a timeout) surface as
// kalm::Error naming the collective, this rank and the timeout; UsageError for
// a bad rank/world, a missing rendezvous or a malformed launcher variable.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kalm::train {

struct DistOptions {
  int world_size = 1;            // processes
  int rank = 0;                  // this process, in [0, world_size)
  int local_rank = 0;            // rank on this host (LOCAL_RANK): picks the GPU for --device cuda
  std::string store_path;        // c10d FileStore file shared by every rank; "" = TCPStore
  std::string master_addr;       // TCPStore host (rank 0 serves it) when store_path is ""
  int master_port = 0;           // TCPStore port, 1..65535
  bool agent_store = false;      // torchrun's agent serves the TCPStore: every rank is a client
  int restart_count = 0;         // TORCHELASTIC_RESTART_COUNT: keys of an earlier attempt are not reused
  double timeout_s = 300;        // store operations and collectives
  std::string source = "flags";  // where rank/world came from: flags | RANK/WORLD_SIZE | SLURM | default
  std::string backend = "auto";  // auto | nccl | gloo (resolve_backend)
  double bucket_mb = 25;         // gradient buckets reduced during backward (MiB); 0 = one all-reduce after it
};

// What the command line said (unset = not given).
struct DistFlags {
  std::optional<int> world_size;  // --world-size
  std::optional<int> rank;        // --rank
  std::string store_path;         // --dist-store
  double timeout_s = 300;         // --dist-timeout
  std::string backend = "auto";   // --dist-backend
  double bucket_mb = 25;          // --grad-bucket-mb
};

// getenv-like lookup (nullptr = unset); tests pass their own.
using EnvLookup = std::function<const char*(const char*)>;

// Resolves the launch: each flag beats its environment variable. Rank and world
// come from --rank/--world-size, else RANK/WORLD_SIZE (torchrun, and wrappers
// that export them), else SLURM_PROCID/SLURM_NTASKS, else 0 of 1. LOCAL_RANK
// (else SLURM_LOCALID, else 0) is read. With world > 1 the rendezvous is
// --dist-store, else MASTER_ADDR:MASTER_PORT. Throws UsageError naming the
// flag or variable: a non-integer, a rank outside [0, world), only one of
// RANK/WORLD_SIZE, world > 1 without a rendezvous, a port outside 1..65535,
// a timeout <= 0.
DistOptions resolve_dist(const DistFlags& flags, const EnvLookup& env);

// Whether this build has the Gloo backend (c10d's Gloo headers were found at
// build time; pip torch wheels lack Gloo's) and the NCCL backend (LibTorch
// with NCCL, and nccl.h).
bool gloo_available();
bool nccl_available();
// Either of the two.
bool data_parallel_available();

enum class DistBackend { kGloo, kNccl };
std::string_view backend_name(DistBackend backend);  // "gloo" / "nccl"
// "auto" | "nccl" | "gloo" for ranks on `device`: auto = nccl on CUDA when
// this build has it, else gloo. Throws UsageError for another name, nccl on a
// CPU device, and a backend this build lacks (saying how to rebuild).
DistBackend resolve_backend(const std::string& name, const torch::Device& device);

class DataParallel {
 public:
  // Joins the group for ranks training on `device` (options.backend picks
  // the backend, resolve_backend): blocks until all ranks have joined (at
  // most timeout_s). Throws UsageError for bad options, kalm::Error when the
  // rendezvous fails.
  DataParallel(const DistOptions& options, const torch::Device& device);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return options_.rank; }
  int world() const { return options_.world_size; }
  DistBackend backend() const { return backend_; }

  // [n, D] per rank (same n, D, dtype everywhere) -> [world·n, D] in rank order
  // on `local`'s device; this rank's rows are `local` itself (gradient flows
  // into it), the others are detached copies.
  torch::Tensor all_gather_rows(const torch::Tensor& local);
  // Sums every defined gradient of `params` over ranks, in place.
  void all_reduce_gradients(const std::vector<torch::Tensor>& params);
  // The largest value of `value` over ranks (agreeing on a stop, e.g.).
  std::int64_t all_max(std::int64_t value);
  // Waits for every rank; `what` names the occasion in an error message.
  void barrier(const char* what = "barrier");
  // Rank 0 runs `work` (writing a checkpoint) while every other rank waits
  // for it through the rendezvous store rather than in a collective: under
  // NCCL a collective left pending behind a write longer than --dist-timeout
  // would be aborted by NCCL's watchdog. Rank 0 marks itself alive in the
  // store about once a second while `work` runs, so a write may take as long
  // as it needs. A waiting rank throws kalm::Error (naming `what`) when rank 0
  // has not arrived within the timeout, has shown no sign of life for the
  // timeout (a hung or frozen rank 0), or reports that `work` failed (with its
  // message). On rank 0 an exception from `work` is rethrown, unchanged,
  // after the others have been told. Every rank calls it at the same points.
  void leader_work(const char* what, const std::function<void()>& work);

 private:
  friend class GradientBuckets;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DistOptions options_;
  DistBackend backend_ = DistBackend::kGloo;
};

// Gradients summed over ranks while backward still runs, as PyTorch's DDP
// does: the parameters are split into buckets of about bucket_mb MiB, in the
// reverse of their registration order (the order backward produces them: last
// layer first); a hook on each parameter's gradient accumulator counts the
// gradients the armed backward has finished, and a bucket whose parameters are
// all done is flattened and its all-reduce launched asynchronously, so the
// collective runs while backward computes earlier layers. Buckets are launched
// strictly in bucket order (bucket k waits for 0..k-1), so every rank issues
// the same collectives in the same order, which c10d requires.
//
// Use: arm() right before the step's last backward (the one after which each
// gradient is final: the last micro-batch, GradCache's last call), finish()
// after it. finish() launches the buckets whose parameters the armed backward
// did not reach (e.g. an embedding table whose gradient GradCache accumulates
// by hand), waits for every bucket and writes the sums back into .grad
// (without a preceding arm(), it reduces every bucket there and then).
// Earlier backward passes of the step (gradient accumulation, GradCache's
// other calls) run with the hooks disarmed: nothing is launched before the
// gradients are final. A parameter whose gradient is undefined at launch is
// left out of its bucket's buffer, as all_reduce_gradients does; every rank
// runs the same model and graph, so they agree on which.
//
// Results equal all_reduce_gradients' up to the order of floating-point
// additions across ranks (bit-identical for two ranks).
// Thread safety: hooks run on the autograd engine's threads (a CUDA device
// thread for GPU graphs); the bucket state is guarded by a mutex. arm() and
// finish() are called from the training thread.
class GradientBuckets {
 public:
  // Registers the hooks; `params` as Module::parameters() lists them. bucket_mb > 0.
  GradientBuckets(DataParallel& group, const std::vector<torch::Tensor>& params, double bucket_mb);
  ~GradientBuckets();  // removes the hooks
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  void arm();
  void finish();

  // What the last finish() saw, for tests and benchmarks.
  struct Counts {
    std::int64_t buckets = 0;               // buckets of the model
    std::int64_t launched_in_backward = 0;  // of those, launched by a hook (overlapping backward)
    std::int64_t launched_at_finish = 0;    // launched by finish()
  };
  Counts last_counts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kalm::train
