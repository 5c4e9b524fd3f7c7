#include "kalm/core/runtime.h"

#include "kalm/core/host_allocator.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <atomic>

namespace kalm::core {

void configure_runtime(const cli::CommonOptions& common) {
  install_host_block_cache();
  const int threads = common.resolved_threads();
  cli::apply_thread_count(threads);
  at::set_num_threads(threads);
  torch::manual_seed(common.seed);
}

bool set_flush_denormals(bool on) {
  auto& context = at::globalContext();
  if (!context.setFlushDenormal(on)) return false;  // this thread (the CPU cannot: false)
  // The mode is per thread: set it on the pools that already exist. kalm's
  // own loops and LibTorch's kernels may run on different OpenMP runtimes.
  std::atomic<bool> all{true};
#pragma omp parallel
  {
    if (!at::globalContext().setFlushDenormal(on)) all = false;
  }
  at::parallel_for(0, at::get_num_threads(), 1, [&](std::int64_t, std::int64_t) {
    if (!at::globalContext().setFlushDenormal(on)) all = false;
  });
  return all;
}

}  // namespace kalm::core
