#pragma once
// Exact retrieval for the data tools: every query's top hits over a pool of
// embeddings, as the Hit lists that kalm/mine/selection.h consumes.
//
// Shapes: queries [Q, D], pool [N, D], float (any dtype search::exact_topk
// takes). Returns Q lists of min(k, N) hits, score descending then pool index
// ascending (deterministic). An empty pool or k <= 0 gives empty lists.
// Throws FormatError when the dimensions differ (they come from user files).
// The search runs on `device`: queries are moved there and the pool is
// uploaded block by block (search::exact_topk), so a GPU search holds only the
// queries and one block of the pool at a time.
// Thread safety: a pure function (LibTorch's intra-op pool inside).

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "kalm/mine/selection.h"
#include "kalm/search/topk.h"

namespace kalm::mine {

std::vector<std::vector<Hit>> retrieve(const torch::Tensor& queries, const torch::Tensor& pool, std::int64_t k,
                                       search::SearchPrecision precision = search::SearchPrecision::F32,
                                       const torch::Device& device = torch::kCPU);

}  // namespace kalm::mine
