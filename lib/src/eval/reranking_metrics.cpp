#include "kalm/eval/reranking_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "kalm/error.h"
#include "kalm/eval/pair_metrics.h"

namespace kalm::eval {

RerankingScores reranking_scores(const std::vector<RerankingInstance>& instances, int mrr_k) {
  if (mrr_k < 1) throw UsageError("reranking: MRR cutoff " + std::to_string(mrr_k) + " must be >= 1");
  RerankingScores out;
  double ap_sum = 0, mrr_sum = 0;
  std::vector<double> scores;
  std::vector<int> relevant;
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < instances.size(); ++i) {
    const RerankingInstance& inst = instances[i];
    scores.assign(inst.positive_scores.begin(), inst.positive_scores.end());
    scores.insert(scores.end(), inst.negative_scores.begin(), inst.negative_scores.end());
    for (double s : scores)
      if (!std::isfinite(s))
        throw FormatError("reranking: instance " + std::to_string(i) + " has a non-finite score");
    if (inst.positive_scores.empty() || inst.negative_scores.empty()) {
      ++out.skipped;
      continue;
    }
    relevant.assign(scores.size(), 0);
    std::fill(relevant.begin(), relevant.begin() + static_cast<std::ptrdiff_t>(inst.positive_scores.size()), 1);

    order.resize(scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return -scores[a] < -scores[b]; });
    double rr = 0;
    for (std::size_t r = 0; r < order.size() && r < static_cast<std::size_t>(mrr_k); ++r)
      if (relevant[order[r]]) {
        rr = 1.0 / static_cast<double>(r + 1);
        break;
      }
    mrr_sum += rr;
    ap_sum += average_precision(relevant, scores);
    ++out.evaluated;
  }
  if (out.evaluated == 0)
    throw FormatError("reranking: no instance has both a positive and a negative candidate (" +
                      std::to_string(instances.size()) + " instances)");
  out.map = ap_sum / static_cast<double>(out.evaluated);
  out.mrr = mrr_sum / static_cast<double>(out.evaluated);
  return out;
}

}  // namespace kalm::eval
