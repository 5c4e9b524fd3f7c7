#pragma once
// Binary-label metrics over pair scores, as mteb's pair classification and
// reranking evaluators compute them.
//
// average_precision: sklearn.metrics.average_precision_score for binary labels
//   (sklearn 1.2): sort by score descending, one operating point per distinct
//   score (tied scores enter together), AP = sum over points of
//   (recall_i - recall_{i-1}) * precision_i. No positive label gives 0 (sklearn
//   warns and returns 0 too).
//
// best_accuracy / best_f1: mteb's PairClassification _find_best_acc_and_threshold
//   and _find_best_f1_and_threshold (mteb 2; the same in 1.x): rows sorted by
//   score (descending when higher means more similar, ascending for distances)
//   with a STABLE sort, so tied rows keep input order; the first n-1 rows are
//   each tried as the last "positive" row; the threshold is the midpoint between
//   that row's score and the next one's; only strict improvements replace the
//   best (so the first best wins). Accuracy starts at 0 with threshold -1; F1,
//   precision, recall start at 0 with threshold 0 and only positions with a
//   correct positive count.
//
// Labels are 0 or 1. Thread safety: pure functions.
// Throws FormatError: lengths differ, no pairs, a label other than 0/1, or a
// non-finite score.

#include <string>
#include <vector>

namespace kalm::eval {

double average_precision(const std::vector<int>& labels, const std::vector<double>& scores);

struct ThresholdAccuracy {
  double accuracy = 0;
  double threshold = -1;
};
struct ThresholdF1 {
  double f1 = 0;
  double precision = 0;
  double recall = 0;
  double threshold = 0;
};

ThresholdAccuracy best_accuracy(const std::vector<double>& scores, const std::vector<int>& labels,
                                bool higher_is_similar);
ThresholdF1 best_f1(const std::vector<double>& scores, const std::vector<int>& labels,
                    bool higher_is_similar);

// mteb's _compute_metrics_values for one score function. `ap` is computed on
// the scores negated when lower means more similar, as mteb does.
struct PairClassificationScores {
  double accuracy = 0;
  double accuracy_threshold = 0;
  double f1 = 0;
  double f1_threshold = 0;
  double precision = 0;
  double recall = 0;
  double ap = 0;
};
PairClassificationScores pair_classification_scores(const std::vector<double>& scores,
                                                    const std::vector<int>& labels,
                                                    bool higher_is_similar);

}  // namespace kalm::eval
