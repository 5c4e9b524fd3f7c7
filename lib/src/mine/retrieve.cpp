#include "kalm/mine/retrieve.h"

#include "kalm/error.h"
#include "kalm/search/topk.h"

namespace kalm::mine {

std::vector<std::vector<Hit>> retrieve(const torch::Tensor& queries, const torch::Tensor& pool, std::int64_t k,
                                       search::SearchPrecision precision, const torch::Device& device) {
  std::vector<std::vector<Hit>> out(static_cast<std::size_t>(queries.size(0)));
  if (pool.size(0) == 0 || queries.size(0) == 0 || k <= 0) return out;
  if (queries.size(1) != pool.size(1))
    throw FormatError("query embeddings have dimension " + std::to_string(queries.size(1)) +
                      " but the candidate pool's have " + std::to_string(pool.size(1)));
  search::TopKOptions to;
  to.k = std::min<std::int64_t>(k, pool.size(0));
  to.precision = precision;
  auto res = search::exact_topk(queries.to(device), pool, to);
  auto scores = res.scores.contiguous();
  auto indices = res.indices.contiguous();
  const float* s = scores.data_ptr<float>();
  const std::int64_t* idx = indices.data_ptr<std::int64_t>();
  const std::int64_t kk = scores.size(1);
  for (std::int64_t q = 0; q < scores.size(0); ++q) {
    auto& hits = out[static_cast<std::size_t>(q)];
    hits.reserve(static_cast<std::size_t>(kk));
    for (std::int64_t j = 0; j < kk; ++j) hits.push_back({idx[q * kk + j], s[q * kk + j]});
  }
  return out;
}

}  // namespace kalm::mine
