#pragma once
// mteb's embedding-level scoring for STS, pair classification and bitext
// mining, on top of the plain metrics (correlation.h, pair_metrics.h,
// classification_metrics.h).
//
// Similarities (paired_similarities), per row i of two [N, D] matrices, as
// sklearn.metrics.pairwise computes them for mteb:
// - cosine = 1 - paired_cosine_distances = 1 - |x/|x| - y/|y||^2 / 2, where a
//   zero row is left as is (sklearn's normalize), so cosine(0, y) = 0.5;
// - dot = x . y; euclidean = |x - y|; manhattan = sum |x_d - y_d| (distances).
// Computed in float64. mteb computes them in the embeddings' own dtype (float32
// for most models), so on float32 input its values differ from these in the
// 7th-8th significant digit; metrics of float64 input match to 1e-12.
//
// STS (sts_scores, mteb AnySTSEvaluator + AbsTaskSTS): Pearson and Spearman of
// the gold scores against cosine, -manhattan, -euclidean; `pearson`/`spearman`
// use the model's similarity, cosine for kalm models. mteb normalises gold
// scores to [0, 1] first; correlations do not change under that map.
//
// Pair classification (pair_classification): pair_classification_scores for
// cosine, dot (higher = similar), euclidean and manhattan (lower = similar),
// and max_* = the maximum of each metric over the four, as mteb reports them
// (mteb also has "similarity", the model's function: cosine here, which changes
// no maximum).
//
// Bitext mining (bitext_mining): each source row's nearest target row by cosine
// (rows L2-normalised, then exact top-1 inner product, kalm::search::exact_topk;
// among equal scores the lowest target index wins, where mteb's torch.topk
// leaves ties unspecified), scored with bitext_scores against `gold_targets`
// (gold_targets[i] = the target index of source i; empty = i, as mteb uses
// when a dataset has no "gold" column).
//
// Shapes: a, b [N, D], 2-D, same shape, any floating dtype, any device (copied
// to CPU float64). Thread safety: pure functions (exact_topk uses LibTorch's
// thread pool). Throws UsageError for shape/dtype mismatches; FormatError for
// label/score count mismatches, bad labels, gold indices out of range.

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "kalm/eval/classification_metrics.h"
#include "kalm/eval/pair_metrics.h"

namespace kalm::eval {

struct PairedSimilarities {
  std::vector<double> cosine;
  std::vector<double> dot;
  std::vector<double> euclidean;  // distance
  std::vector<double> manhattan;  // distance
};
PairedSimilarities paired_similarities(const torch::Tensor& a, const torch::Tensor& b);

struct StsScores {
  double pearson = 0;   // model similarity (cosine)
  double spearman = 0;  // model similarity (cosine); mteb's main score
  double cosine_pearson = 0;
  double cosine_spearman = 0;
  double manhattan_pearson = 0;
  double manhattan_spearman = 0;
  double euclidean_pearson = 0;
  double euclidean_spearman = 0;
};
StsScores sts_scores(const PairedSimilarities& similarities, const std::vector<double>& gold);
StsScores sts_scores(const torch::Tensor& a, const torch::Tensor& b, const std::vector<double>& gold);

struct PairClassificationReport {
  PairClassificationScores cosine, dot, euclidean, manhattan;
  double max_accuracy = 0;
  double max_f1 = 0;
  double max_precision = 0;
  double max_recall = 0;
  double max_ap = 0;  // mteb's main score
};
PairClassificationReport pair_classification(const PairedSimilarities& similarities,
                                             const std::vector<int>& labels);
PairClassificationReport pair_classification(const torch::Tensor& a, const torch::Tensor& b,
                                             const std::vector<int>& labels);

struct BitextMiningResult {
  std::vector<std::int64_t> predicted;  // nearest target index per source row
  BitextScores scores;                  // f1 is mteb's main score
};
BitextMiningResult bitext_mining(const torch::Tensor& source, const torch::Tensor& target,
                                 const std::vector<std::int64_t>& gold_targets = {});

}  // namespace kalm::eval
