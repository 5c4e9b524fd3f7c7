#pragma once
// Exact maximum-inner-product search: blocked matrix products and a per-query
// top-k selection (the method of faiss's IndexFlatIP, deterministic).
//
// Shapes: queries [Q, D], corpus [N, D], both 2-D, same D; f32, f16 or bf16
// (computed in f32). The corpus may be a zero-copy view of a memory-mapped
// safetensors file: it is read one block of rows at a time, so memory is
// O(Q·k + block·D + Q_block·block), not O(N·D).
//
// Order and ties: results per query are sorted by score descending, then corpus
// index ascending; among equal scores the lower corpus index wins a place in
// the top k. Identical inputs and thread counts give identical outputs.
//
// Thread safety: a pure function; it uses LibTorch's intra-op pool and OpenMP.
// Throws UsageError on shape/dtype mismatches.

#include <torch/torch.h>

#include <cstdint>
#include <functional>

namespace kalm::search {

struct TopKOptions {
  std::int64_t k = 10;                // results per query (fewer if N < k)
  std::int64_t corpus_block = 8192;   // corpus rows multiplied at once
  std::int64_t query_block = 8192;    // query rows multiplied at once
};

struct TopKResult {
  torch::Tensor scores;   // [Q, k'] float32, k' = min(k, N)
  torch::Tensor indices;  // [Q, k'] int64 corpus row indices
};

// Called after each corpus block with the rows done so far (for progress bars).
using SearchProgress = std::function<void(std::int64_t corpus_rows_done)>;

TopKResult exact_topk(const torch::Tensor& queries, const torch::Tensor& corpus,
                      const TopKOptions& options, const SearchProgress& progress = {});

}  // namespace kalm::search
