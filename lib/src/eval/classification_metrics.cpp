#include "kalm/eval/classification_metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <unordered_map>

#include "kalm/error.h"

namespace kalm::eval {

namespace {

void check_lengths(std::size_t a, std::size_t b, const char* what) {
  if (a != b)
    throw FormatError(std::string(what) + ": " + std::to_string(a) + " true labels but " +
                      std::to_string(b) + " predicted");
  if (a == 0) throw FormatError(std::string(what) + ": no samples");
}

struct PerLabel {
  double tp = 0, predicted = 0, truth = 0;
};

// Per-label counts over the sorted union of labels (sklearn's unique_labels).
std::map<std::int64_t, PerLabel> count(const std::vector<std::int64_t>& y_true,
                                       const std::vector<std::int64_t>& y_pred) {
  std::map<std::int64_t, PerLabel> labels;
  for (std::size_t i = 0; i < y_true.size(); ++i) {
    labels[y_true[i]].truth += 1;
    labels[y_pred[i]].predicted += 1;
    if (y_true[i] == y_pred[i]) labels[y_true[i]].tp += 1;
  }
  return labels;
}

struct Averages {
  double precision_macro = 0, recall_macro = 0, f1_macro = 0;
  double precision_weighted = 0, recall_weighted = 0, f1_weighted = 0;
};

Averages averages(const std::map<std::int64_t, PerLabel>& labels, double n_samples) {
  Averages a;
  for (const auto& [label, c] : labels) {
    const double p = c.predicted > 0 ? c.tp / c.predicted : 0.0;
    const double r = c.truth > 0 ? c.tp / c.truth : 0.0;
    const double f = p + r > 0 ? 2 * p * r / (p + r) : 0.0;
    a.precision_macro += p;
    a.recall_macro += r;
    a.f1_macro += f;
    a.precision_weighted += p * c.truth;
    a.recall_weighted += r * c.truth;
    a.f1_weighted += f * c.truth;
  }
  const double k = static_cast<double>(labels.size());
  a.precision_macro /= k;
  a.recall_macro /= k;
  a.f1_macro /= k;
  a.precision_weighted /= n_samples;
  a.recall_weighted /= n_samples;
  a.f1_weighted /= n_samples;
  return a;
}

double accuracy(const std::vector<std::int64_t>& y_true, const std::vector<std::int64_t>& y_pred) {
  std::size_t hits = 0;
  for (std::size_t i = 0; i < y_true.size(); ++i) hits += y_true[i] == y_pred[i];
  return static_cast<double>(hits) / static_cast<double>(y_true.size());
}

// sklearn.metrics.cluster.entropy: -sum(p log p) over the label counts.
double entropy(const std::vector<std::int64_t>& labels) {
  std::unordered_map<std::int64_t, double> counts;
  for (auto l : labels) counts[l] += 1;
  if (counts.size() == 1) return 0.0;
  const double total = static_cast<double>(labels.size());
  const double log_total = std::log(total);
  double h = 0;
  for (const auto& [label, c] : counts) h -= (c / total) * (std::log(c) - log_total);
  return h;
}

}  // namespace

ClassificationScores classification_scores(const std::vector<std::int64_t>& y_true,
                                           const std::vector<std::int64_t>& y_pred) {
  check_lengths(y_true.size(), y_pred.size(), "classification");
  const Averages a = averages(count(y_true, y_pred), static_cast<double>(y_true.size()));
  ClassificationScores s;
  s.accuracy = accuracy(y_true, y_pred);
  s.f1 = a.f1_macro;
  s.f1_weighted = a.f1_weighted;
  s.precision = a.precision_macro;
  s.precision_weighted = a.precision_weighted;
  s.recall = a.recall_macro;
  s.recall_weighted = a.recall_weighted;
  return s;
}

BitextScores bitext_scores(const std::vector<std::int64_t>& gold,
                           const std::vector<std::int64_t>& predicted) {
  check_lengths(gold.size(), predicted.size(), "bitext mining");
  const Averages a = averages(count(gold, predicted), static_cast<double>(gold.size()));
  BitextScores s;
  s.precision = a.precision_weighted;
  s.recall = a.recall_weighted;
  s.f1 = a.f1_weighted;
  s.accuracy = accuracy(gold, predicted);
  return s;
}

ClusteringScores clustering_scores(const std::vector<std::int64_t>& labels_true,
                                   const std::vector<std::int64_t>& labels_pred) {
  check_lengths(labels_true.size(), labels_pred.size(), "clustering");
  const double h_true = entropy(labels_true);
  const double h_pred = entropy(labels_pred);

  // Mutual information over the non-zero cells of the contingency table, term
  // by term as sklearn's mutual_info_score (including its per-cell eps cut), so
  // rounding matches.
  std::map<std::pair<std::int64_t, std::int64_t>, double> cells;
  std::unordered_map<std::int64_t, double> row, col;
  for (std::size_t i = 0; i < labels_true.size(); ++i) {
    cells[{labels_true[i], labels_pred[i]}] += 1;
    row[labels_true[i]] += 1;
    col[labels_pred[i]] += 1;
  }
  const double total = static_cast<double>(labels_true.size());
  const double log_total = std::log(total);
  double mi = 0;
  if (row.size() > 1 && col.size() > 1) {  // sklearn returns 0 for a single class or cluster
    for (const auto& [key, n] : cells) {
      const double p = n / total;
      const double outer = row[key.first] * col[key.second];
      // log(pi pj / N^2) written as sklearn does: -log(outer) + 2 log(N).
      const double term = p * (std::log(n) - log_total) + p * (-std::log(outer) + 2 * log_total);
      mi += std::abs(term) < 2.220446049250313e-16 ? 0.0 : term;
    }
    mi = std::max(mi, 0.0);
  }
  ClusteringScores s;
  s.homogeneity = h_true != 0 ? mi / h_true : 1.0;
  s.completeness = h_pred != 0 ? mi / h_pred : 1.0;
  s.v_measure = s.homogeneity + s.completeness == 0
                    ? 0.0
                    : 2 * s.homogeneity * s.completeness / (s.homogeneity + s.completeness);
  return s;
}

}  // namespace kalm::eval
