#include "kalm/eval/pair_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kalm/error.h"

namespace kalm::eval {

namespace {

void check_inputs(const std::vector<int>& labels, const std::vector<double>& scores, const char* what) {
  if (labels.size() != scores.size())
    throw FormatError(std::string(what) + ": " + std::to_string(scores.size()) + " scores but " +
                      std::to_string(labels.size()) + " labels");
  if (labels.empty()) throw FormatError(std::string(what) + ": no pairs");
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] != 0 && labels[i] != 1)
      throw FormatError(std::string(what) + ": label " + std::to_string(i) + " is " +
                        std::to_string(labels[i]) + "; labels must be 0 or 1");
    if (!std::isfinite(scores[i]))
      throw FormatError(std::string(what) + ": score " + std::to_string(i) + " is not finite");
  }
}

// Row order of Python's sorted(rows, key=score, reverse=higher_is_similar):
// stable, and reverse=True keeps equal rows in input order.
std::vector<std::size_t> stable_order(const std::vector<double>& scores, bool descending) {
  std::vector<std::size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  if (descending)
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return scores[a] > scores[b]; });
  else
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return scores[a] < scores[b]; });
  return order;
}

}  // namespace

double average_precision(const std::vector<int>& labels, const std::vector<double>& scores) {
  check_inputs(labels, scores, "average precision");
  const auto order = stable_order(scores, true);
  double total_pos = 0;
  for (int l : labels) total_pos += l;
  if (total_pos == 0) return 0.0;
  double ap = 0, tp = 0, prev_recall = 0;
  const std::size_t n = order.size();
  for (std::size_t i = 0; i < n; ++i) {
    tp += labels[order[i]];
    // One operating point per distinct score: after the last of a tied run.
    if (i + 1 < n && scores[order[i + 1]] == scores[order[i]]) continue;
    const double precision = tp / static_cast<double>(i + 1);
    const double recall = tp / total_pos;
    ap += (recall - prev_recall) * precision;
    prev_recall = recall;
  }
  return ap;
}

ThresholdAccuracy best_accuracy(const std::vector<double>& scores, const std::vector<int>& labels,
                                bool higher_is_similar) {
  check_inputs(labels, scores, "pair classification");
  const auto order = stable_order(scores, higher_is_similar);
  ThresholdAccuracy best;
  std::size_t positive_so_far = 0;
  std::size_t remaining_negatives = static_cast<std::size_t>(std::count(labels.begin(), labels.end(), 0));
  const double n = static_cast<double>(labels.size());
  for (std::size_t i = 0; i + 1 < order.size(); ++i) {
    if (labels[order[i]] == 1)
      ++positive_so_far;
    else
      --remaining_negatives;
    const double acc = static_cast<double>(positive_so_far + remaining_negatives) / n;
    if (acc > best.accuracy) {
      best.accuracy = acc;
      best.threshold = (scores[order[i]] + scores[order[i + 1]]) / 2;
    }
  }
  return best;
}

ThresholdF1 best_f1(const std::vector<double>& scores, const std::vector<int>& labels,
                    bool higher_is_similar) {
  check_inputs(labels, scores, "pair classification");
  const auto order = stable_order(scores, higher_is_similar);
  ThresholdF1 best;
  const double total_positives = static_cast<double>(std::count(labels.begin(), labels.end(), 1));
  std::size_t extracted = 0, correct = 0;
  for (std::size_t i = 0; i + 1 < order.size(); ++i) {
    ++extracted;
    if (labels[order[i]] == 1) ++correct;
    if (correct == 0) continue;
    const double precision = static_cast<double>(correct) / static_cast<double>(extracted);
    const double recall = static_cast<double>(correct) / total_positives;
    const double f1 = 2 * precision * recall / (precision + recall);
    if (f1 > best.f1) {
      best.f1 = f1;
      best.precision = precision;
      best.recall = recall;
      best.threshold = (scores[order[i]] + scores[order[i + 1]]) / 2;
    }
  }
  return best;
}

PairClassificationScores pair_classification_scores(const std::vector<double>& scores,
                                                    const std::vector<int>& labels,
                                                    bool higher_is_similar) {
  PairClassificationScores out;
  const ThresholdAccuracy acc = best_accuracy(scores, labels, higher_is_similar);
  const ThresholdF1 f1 = best_f1(scores, labels, higher_is_similar);
  out.accuracy = acc.accuracy;
  out.accuracy_threshold = acc.threshold;
  out.f1 = f1.f1;
  out.f1_threshold = f1.threshold;
  out.precision = f1.precision;
  out.recall = f1.recall;
  if (higher_is_similar) {
    out.ap = average_precision(labels, scores);
  } else {
    std::vector<double> negated(scores.size());
    std::transform(scores.begin(), scores.end(), negated.begin(), [](double s) { return -s; });
    out.ap = average_precision(labels, negated);
  }
  return out;
}

}  // namespace kalm::eval
