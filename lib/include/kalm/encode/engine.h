#pragma once
// The encoding engine: token sequences -> length-sorted, token-budget batches ->
// model -> pooled embeddings, returned in input order.
//
// Sorting by length cuts padding (a batch is padded to its longest row); the
// token budget bounds memory: rows × longest row <= batch_tokens (a single row
// longer than the budget still forms its own batch). Longest batches run first,
// so a budget too large for memory fails at once rather than at the end.
//
// Thread safety: one Engine per thread; LibTorch's intra-op pool does the
// parallel work inside each batch.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "kalm/error.h"

namespace kalm::core {
class ProfileWindow;
}  // namespace kalm::core

namespace kalm::encode {

// Thrown by Engine::embed when the model's output for a sequence holds NaN or
// infinity (a damaged model, an overflow in reduced precision): never written
// out as an embedding. `index` is the sequence's position in the input, so the
// caller can name the record.
class NonFiniteEmbedding : public ModelError {
 public:
  NonFiniteEmbedding(std::size_t index, const std::string& what) : ModelError(what), index(index) {}
  std::size_t index;
};

// What the engine needs from a model: right-padded ids in, pooled vectors out.
class BatchEmbedder {
 public:
  virtual ~BatchEmbedder() = default;
  // ids, mask: [B, L] int64 on the host (in pinned memory when device() is a
  // GPU, so that the embedder uploads them without blocking); mask is 1 for
  // tokens, 0 for padding.
  // pool_mask: [B, L] int64, 1 for the tokens to pool: the mask, less each
  // row's leading prompt tokens where the pooling leaves them out
  // (sentence-transformers' include_prompt=false). Attention sees `mask`.
  // Returns [B, D] pooled embeddings (any floating dtype, not yet normalised)
  // on device(), without waiting for the device: the engine reads them back
  // after it has queued the next batch.
  virtual torch::Tensor embed(const torch::Tensor& ids, const torch::Tensor& mask,
                              const torch::Tensor& pool_mask) = 0;
  virtual torch::Device device() const = 0;
  virtual std::int64_t pad_id() const { return 0; }
};

// Padded tokens per forward pass when none is given. On a CPU small batches
// win: a batch's activations (e.g. 1024 x 4864 bf16 FFN rows, 10 MB) stay near
// the cores' caches between the element-wise kernels, and the GEMMs are
// already efficient at a few hundred rows (measured 2026-12-06 on an Intel
// Xeon, 24-layer 0.5B shape: 1024 embedded 10-35% faster than 16384 in bf16,
// 17% in f32; bench/README.md). A GPU needs large batches to fill its cores.
inline constexpr std::int64_t kDefaultBatchTokensCpu = 1024;
inline constexpr std::int64_t kDefaultBatchTokensGpu = 16384;
std::int64_t default_batch_tokens(const torch::Device& device);

struct EngineOptions {
  // Padded tokens per forward pass (rows × longest); 0: default_batch_tokens()
  // of the embedder's device.
  std::int64_t batch_tokens = 0;
  bool sort_by_length = true;         // off: batches follow input order (for comparisons)
  // With sorting: start a new batch when a row would be more than this fraction
  // padding. A small corpus otherwise fits in one batch padded to its longest
  // text; on a CPU, GEMMs are already efficient at a few hundred token rows.
  double max_padding = 0.25;
  // Rows per batch at most; 0: none on a CPU, kMaxGpuBatchRows on a GPU.
  std::int64_t max_rows = 0;
};

// CUDA's attention kernels put a batch's rows on a grid dimension of at most
// 65535 blocks: more rows in one call (tiny texts under a large
// --batch-tokens) fail to launch.
constexpr std::int64_t kMaxGpuBatchRows = 65535;

struct EngineStats {
  std::int64_t sequences = 0;
  std::int64_t tokens = 0;         // real tokens
  std::int64_t padded_tokens = 0;  // tokens including padding, as computed
  std::int64_t batches = 0;
};

// Called after each batch with (sequences done, real tokens done); on every
// device the call for a batch comes after the next batch has been handed to
// the embedder (on a GPU that batch then runs while the host reads this one).
using EngineProgress = std::function<void(std::int64_t, std::int64_t)>;

// A plan of batches: each is a list of indices into the input sequences.
std::vector<std::vector<std::size_t>> plan_batches(const std::vector<std::size_t>& lengths,
                                                   const EngineOptions& options);

class Engine {
 public:
  Engine(BatchEmbedder& embedder, EngineOptions options);

  // Embeds every sequence; returns [N, D] float32 on the CPU in input order.
  // pool_from: empty, or per sequence the number of leading tokens left out of
  // pooling (the prompt under include_prompt=false; see prompt_pool_skip()).
  // An empty sequence, or one with nothing after its skipped tokens, is a
  // UsageError (there would be nothing to pool); a non-finite output is a
  // NonFiniteEmbedding.
  torch::Tensor embed(const std::vector<std::vector<std::int32_t>>& sequences,
                      const EngineProgress& progress = {}, const std::vector<std::int64_t>& pool_from = {});

  const EngineStats& stats() const { return stats_; }

  // Batches are numbered from 1 over the engine's life (every embed() call);
  // the window (not owned; null = none) records those in its range.
  void set_profile(core::ProfileWindow* window) { profile_ = window; }

 private:
  BatchEmbedder& embedder_;
  EngineOptions options_;
  EngineStats stats_;
  core::ProfileWindow* profile_ = nullptr;
};

// Matryoshka truncation and normalisation of pooled embeddings [N, D]:
// keep the first `dim` columns (all when dim is 0), then L2-normalise rows if asked.
// Throws UsageError when dim exceeds D.
torch::Tensor finalize_embeddings(const torch::Tensor& pooled, std::int64_t dim, bool normalize);

}  // namespace kalm::encode
