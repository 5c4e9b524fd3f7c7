#pragma once
// Label metrics as mteb reports them, with sklearn's definitions (sklearn 1.2):
//
// classification_scores (mteb classification): accuracy_score; f1_score,
//   precision_score, recall_score with average="macro" and "weighted". The label
//   set is the sorted union of true and predicted labels; per label,
//   precision = tp / predicted (0 when nothing was predicted), recall = tp /
//   true (0 when absent from y_true), F1 = 2PR / (P + R) (0 when P + R = 0):
//   sklearn's zero_division behaviour (it warns and uses 0). Macro: plain mean
//   over labels; weighted: weights = true counts.
//
// bitext_scores (mteb BitextMiningEvaluator): labels are the gold target index
//   of each source sentence, predictions the index of its nearest target;
//   precision/recall/f1 are the weighted averages above (zero_division=0) and
//   accuracy the fraction of exact matches.
//
// v_measure (mteb clustering, sklearn.metrics.v_measure_score, beta = 1):
//   homogeneity = MI / H(true), completeness = MI / H(pred) (each 1 when its
//   entropy is 0), V = 2hc / (h + c) (0 when h + c = 0), natural logarithms,
//   MI from the contingency table exactly as sklearn's mutual_info_score.
//
// Labels are any integers (map strings to integers first). Thread safety: pure
// functions. Throws FormatError when the two label vectors differ in length or
// are empty.

#include <cstdint>
#include <vector>

namespace kalm::eval {

struct ClassificationScores {
  double accuracy = 0;
  double f1 = 0;                   // macro
  double f1_weighted = 0;
  double precision = 0;            // macro
  double precision_weighted = 0;
  double recall = 0;               // macro
  double recall_weighted = 0;
};
ClassificationScores classification_scores(const std::vector<std::int64_t>& y_true,
                                           const std::vector<std::int64_t>& y_pred);

struct BitextScores {
  double precision = 0;  // weighted
  double recall = 0;     // weighted
  double f1 = 0;         // weighted
  double accuracy = 0;
};
BitextScores bitext_scores(const std::vector<std::int64_t>& gold,
                           const std::vector<std::int64_t>& predicted);

struct ClusteringScores {
  double homogeneity = 0;
  double completeness = 0;
  double v_measure = 0;
};
ClusteringScores clustering_scores(const std::vector<std::int64_t>& labels_true,
                                   const std::vector<std::int64_t>& labels_pred);
inline double v_measure(const std::vector<std::int64_t>& labels_true,
                        const std::vector<std::int64_t>& labels_pred) {
  return clustering_scores(labels_true, labels_pred).v_measure;
}

}  // namespace kalm::eval
