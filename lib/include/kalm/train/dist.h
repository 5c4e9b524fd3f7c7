#pragma once
// Data parallelism over c10d's Gloo process group (CPU): one process per rank,
// rendezvous through a c10d FileStore on a file every rank can reach.
//
// How the trainer uses it: every rank plans and samples the same global batch
// (B x world groups; same seed), embeds only its own slice, all-gathers the
// embeddings so the loss sees every rank's negatives (cross-device negatives,
// KaLM's negatives_cross_device), backpropagates into its own slice, and sums
// the gradients over ranks (the loss is the global mean, so the sum of the
// ranks' partial gradients is its gradient). Weights stay identical on every
// rank; rank 0 alone writes checkpoints, metrics and the export.
//
// Thread safety: one DataParallel per process, used from the training thread.
// Errors: c10d/Gloo failures (a rank that died, a timeout) surface as
// kalm::Error naming the operation; UsageError for a bad rank/world.

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kalm::train {

class DataParallel {
 public:
  // Joins the group: blocks until all `world` ranks have joined through `store_path`.
  DataParallel(int rank, int world, const std::string& store_path);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }

  // [n, D] per rank (same n, D, dtype everywhere) -> [world·n, D] in rank order;
  // this rank's rows are `local` itself (gradient flows into it), the others
  // are detached copies.
  torch::Tensor all_gather_rows(const torch::Tensor& local);
  // Sums every defined gradient of `params` over ranks, in place.
  void all_reduce_gradients(const std::vector<torch::Tensor>& params);
  // The largest value of `value` over ranks (agreeing on a stop, e.g.).
  std::int64_t all_max(std::int64_t value);
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_, world_;
};

}  // namespace kalm::train
