#include "kalm/search/topk.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <exception>
#include <vector>

#include "kalm/error.h"

namespace kalm::search {
namespace {

// A fixed-capacity min-heap of (score, index) candidates for one query. The
// root is the weakest kept candidate: lowest score, and among equal scores the
// highest index. Corpus rows arrive in increasing index order, so a newcomer
// with a score equal to the root's has a higher index and correctly loses.
struct Candidate {
  float score;
  std::int64_t index;
};
// The heap comparator: a ranks above b in the final order. With it, the heap's
// front is the weakest candidate and sort_heap puts the best first.
inline bool ranks_above(const Candidate& a, const Candidate& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

void check_matrix(const torch::Tensor& t, const char* what) {
  if (t.dim() != 2)
    throw UsageError(std::string(what) + " must be a 2-D matrix, got " + std::to_string(t.dim()) + " dimensions");
  auto st = t.scalar_type();
  if (st != torch::kFloat32 && st != torch::kFloat16 && st != torch::kBFloat16)
    throw UsageError(std::string(what) + " must be f32, f16 or bf16, got " + std::string(c10::toString(st)));
}

}  // namespace

TopKResult exact_topk(const torch::Tensor& queries, const torch::Tensor& corpus,
                      const TopKOptions& options, const SearchProgress& progress) {
  check_matrix(queries, "queries");
  check_matrix(corpus, "corpus");
  if (queries.size(1) != corpus.size(1))
    throw UsageError("queries have dimension " + std::to_string(queries.size(1)) +
                     " but the corpus has " + std::to_string(corpus.size(1)));
  if (options.k < 1) throw UsageError("k must be at least 1");
  if (options.corpus_block < 1 || options.query_block < 1)
    throw UsageError("search block sizes must be positive");

  torch::NoGradGuard no_grad;
  const std::int64_t num_queries = queries.size(0);
  const std::int64_t num_corpus = corpus.size(0);
  const std::int64_t k = std::min<std::int64_t>(options.k, num_corpus);
  auto cpu_f32 = torch::TensorOptions().dtype(torch::kFloat32);

  TopKResult result{torch::empty({num_queries, k}, cpu_f32),
                    torch::empty({num_queries, k}, torch::TensorOptions().dtype(torch::kInt64))};
  if (num_queries == 0 || k == 0) return result;

  const auto device = queries.device();
  std::vector<std::vector<Candidate>> heaps(static_cast<std::size_t>(num_queries));
  for (auto& h : heaps) h.reserve(static_cast<std::size_t>(k));

  torch::Tensor score_buffer;
  // Queries are converted once per query block; the corpus once per corpus block.
  for (std::int64_t c0 = 0; c0 < num_corpus; c0 += options.corpus_block) {
    const std::int64_t c1 = std::min(num_corpus, c0 + options.corpus_block);
    torch::Tensor block = corpus.slice(0, c0, c1).to(device, torch::kFloat32).contiguous();
    for (std::int64_t q0 = 0; q0 < num_queries; q0 += options.query_block) {
      const std::int64_t q1 = std::min(num_queries, q0 + options.query_block);
      torch::Tensor qblock = queries.slice(0, q0, q1).to(torch::kFloat32);
      // One score buffer reused for every block: a fresh [Qb, Cb] tensor per
      // product costs its page faults every time (about 10% of the search).
      const std::int64_t rows = q1 - q0, cols = c1 - c0;
      if (!score_buffer.defined() || score_buffer.numel() < rows * cols)
        score_buffer = torch::empty({rows * cols}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
      torch::Tensor scores_view = score_buffer.narrow(0, 0, rows * cols).view({rows, cols});
      torch::mm_out(scores_view, qblock, block.t());
      torch::Tensor scores = scores_view.device().is_cpu() ? scores_view : scores_view.to(torch::kCPU);
      const float* s = scores.data_ptr<float>();
      const std::int64_t width = c1 - c0;
      std::exception_ptr failure;
#pragma omp parallel for schedule(static)
      for (std::int64_t q = q0; q < q1; ++q) {
        try {
          auto& heap = heaps[static_cast<std::size_t>(q)];
          const float* row = s + (q - q0) * width;
          for (std::int64_t j = 0; j < width; ++j) {
            float v = row[j];
            if (static_cast<std::int64_t>(heap.size()) < k) {
              // NaN would break the heap order; it ranks below every number.
              if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
              heap.push_back({v, c0 + j});
              std::push_heap(heap.begin(), heap.end(), ranks_above);
            } else if (v > heap.front().score) {
              std::pop_heap(heap.begin(), heap.end(), ranks_above);
              heap.back() = {v, c0 + j};
              std::push_heap(heap.begin(), heap.end(), ranks_above);
            }
          }
        } catch (...) {
#pragma omp critical
          if (!failure) failure = std::current_exception();
        }
      }
      if (failure) std::rethrow_exception(failure);
    }
    if (progress) progress(c1);
  }

  float* out_scores = result.scores.data_ptr<float>();
  std::int64_t* out_indices = result.indices.data_ptr<std::int64_t>();
#pragma omp parallel for schedule(static)
  for (std::int64_t q = 0; q < num_queries; ++q) {
    auto& heap = heaps[static_cast<std::size_t>(q)];
    std::sort_heap(heap.begin(), heap.end(), ranks_above);  // best first
    for (std::int64_t i = 0; i < k; ++i) {
      out_scores[q * k + i] = heap[static_cast<std::size_t>(i)].score;
      out_indices[q * k + i] = heap[static_cast<std::size_t>(i)].index;
    }
  }
  return result;
}

}  // namespace kalm::search
