#include "kalm/core/runtime.h"

#include <torch/torch.h>

namespace kalm::core {

void configure_runtime(const cli::CommonOptions& common) {
  const int threads = common.resolved_threads();
  cli::apply_thread_count(threads);
  at::set_num_threads(threads);
  torch::manual_seed(common.seed);
}

}  // namespace kalm::core
