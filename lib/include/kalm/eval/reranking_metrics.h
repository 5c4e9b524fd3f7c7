#pragma once
// Reranking MAP and MRR@k as mteb 1.x's RerankingEvaluator computes them
// (the evaluator behind the MTEB(eng/cmn, v1) reranking numbers KaLM reports).
//
// Each instance is one query with the scores of its positive and negative
// candidates. Per instance, in mteb's candidate order (positives, then
// negatives):
// - ap: sklearn average_precision_score(is_relevant, scores) (see pair_metrics.h).
// - mrr: 1 / rank of the first positive within the first k, else 0, with
//   candidates ranked by score descending. mteb ranks with
//   torch.argsort(-scores), which is not stable (torch 1.13 CPU reorders tied
//   candidates in an implementation-defined way), so its MRR on tied scores
//   cannot be reproduced; kalm keeps tied candidates in candidate order
//   (positives first). Without ties the two agree exactly (tested).
// Instances with no positive or no negative are skipped, as mteb does; map and
// mrr are means over the instances kept.
//
// mteb 2 evaluates reranking tasks as retrieval over the candidate lists
// (map_cut_1000 / "map_at_1000", mrr_at_10 with doc-id tie breaking): use
// retrieval_metrics.h for those numbers.
//
// Thread safety: pure function. Throws UsageError for k < 1; FormatError when a
// score is not finite or when no instance has both positives and negatives.

#include <cstddef>
#include <vector>

namespace kalm::eval {

struct RerankingInstance {
  std::vector<double> positive_scores;  // scores of the relevant candidates
  std::vector<double> negative_scores;  // scores of the non-relevant candidates
};

struct RerankingScores {
  double map = 0;            // mean average precision
  double mrr = 0;            // mean MRR@k
  std::size_t evaluated = 0; // instances with >= 1 positive and >= 1 negative
  std::size_t skipped = 0;
};

RerankingScores reranking_scores(const std::vector<RerankingInstance>& instances, int mrr_k = 10);

}  // namespace kalm::eval
