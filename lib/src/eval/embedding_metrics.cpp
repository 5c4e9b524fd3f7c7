#include "kalm/eval/embedding_metrics.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kalm/error.h"
#include "kalm/eval/correlation.h"
#include "kalm/search/topk.h"

namespace kalm::eval {

namespace {

void check_matrix(const torch::Tensor& t, const char* what) {
  if (!t.defined() || t.dim() != 2)
    throw UsageError(std::string(what) + ": embeddings must be a 2-D tensor [N, D]");
  if (!t.is_floating_point())
    throw UsageError(std::string(what) + ": embeddings must be floating point");
}

torch::Tensor as_f64(const torch::Tensor& t) {
  return t.to(torch::kCPU, torch::kFloat64).contiguous();
}

}  // namespace

PairedSimilarities paired_similarities(const torch::Tensor& a, const torch::Tensor& b) {
  check_matrix(a, "paired similarities");
  check_matrix(b, "paired similarities");
  if (a.sizes() != b.sizes())
    throw UsageError("paired similarities: shapes differ ([" + std::to_string(a.size(0)) + ", " +
                     std::to_string(a.size(1)) + "] vs [" + std::to_string(b.size(0)) + ", " +
                     std::to_string(b.size(1)) + "])");
  const torch::Tensor x = as_f64(a), y = as_f64(b);
  const std::int64_t n = x.size(0), d = x.size(1);
  const double* px = x.data_ptr<double>();
  const double* py = y.data_ptr<double>();
  PairedSimilarities s;
  s.cosine.resize(static_cast<std::size_t>(n));
  s.dot.resize(static_cast<std::size_t>(n));
  s.euclidean.resize(static_cast<std::size_t>(n));
  s.manhattan.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const double* u = px + i * d;
    const double* v = py + i * d;
    double uu = 0, vv = 0, uv = 0, sq = 0, abs_sum = 0;
    for (std::int64_t k = 0; k < d; ++k) {
      uu += u[k] * u[k];
      vv += v[k] * v[k];
      uv += u[k] * v[k];
      sq += (u[k] - v[k]) * (u[k] - v[k]);
      abs_sum += std::abs(u[k] - v[k]);
    }
    // sklearn.preprocessing.normalize leaves zero rows unchanged (norm 1).
    const double nu = uu == 0 ? 1.0 : std::sqrt(uu);
    const double nv = vv == 0 ? 1.0 : std::sqrt(vv);
    double half_sq = 0;
    for (std::int64_t k = 0; k < d; ++k) {
      const double diff = u[k] / nu - v[k] / nv;
      half_sq += diff * diff;
    }
    const auto at = static_cast<std::size_t>(i);
    s.cosine[at] = 1.0 - 0.5 * half_sq;
    s.dot[at] = uv;
    s.euclidean[at] = std::sqrt(sq);
    s.manhattan[at] = abs_sum;
  }
  for (std::size_t i = 0; i < s.cosine.size(); ++i)
    if (!std::isfinite(s.cosine[i]) || !std::isfinite(s.dot[i]) || !std::isfinite(s.manhattan[i]))
      throw FormatError("paired similarities: row " + std::to_string(i) + " has non-finite values");
  return s;
}

StsScores sts_scores(const PairedSimilarities& sim, const std::vector<double>& gold) {
  if (gold.size() != sim.cosine.size())
    throw FormatError("STS: " + std::to_string(sim.cosine.size()) + " pairs but " +
                      std::to_string(gold.size()) + " gold scores");
  auto negated = [](std::vector<double> v) {
    for (double& x : v) x = -x;
    return v;
  };
  const std::vector<double> neg_manhattan = negated(sim.manhattan);
  const std::vector<double> neg_euclidean = negated(sim.euclidean);
  StsScores s;
  s.cosine_pearson = pearson(gold, sim.cosine);
  s.cosine_spearman = spearman(gold, sim.cosine);
  s.manhattan_pearson = pearson(gold, neg_manhattan);
  s.manhattan_spearman = spearman(gold, neg_manhattan);
  s.euclidean_pearson = pearson(gold, neg_euclidean);
  s.euclidean_spearman = spearman(gold, neg_euclidean);
  s.pearson = s.cosine_pearson;
  s.spearman = s.cosine_spearman;
  return s;
}

StsScores sts_scores(const torch::Tensor& a, const torch::Tensor& b, const std::vector<double>& gold) {
  return sts_scores(paired_similarities(a, b), gold);
}

PairClassificationReport pair_classification(const PairedSimilarities& sim, const std::vector<int>& labels) {
  PairClassificationReport r;
  r.cosine = pair_classification_scores(sim.cosine, labels, true);
  r.dot = pair_classification_scores(sim.dot, labels, true);
  r.euclidean = pair_classification_scores(sim.euclidean, labels, false);
  r.manhattan = pair_classification_scores(sim.manhattan, labels, false);
  for (const PairClassificationScores* s : {&r.cosine, &r.dot, &r.euclidean, &r.manhattan}) {
    r.max_accuracy = std::max(r.max_accuracy, s->accuracy);
    r.max_f1 = std::max(r.max_f1, s->f1);
    r.max_precision = std::max(r.max_precision, s->precision);
    r.max_recall = std::max(r.max_recall, s->recall);
    r.max_ap = std::max(r.max_ap, s->ap);
  }
  return r;
}

PairClassificationReport pair_classification(const torch::Tensor& a, const torch::Tensor& b,
                                             const std::vector<int>& labels) {
  return pair_classification(paired_similarities(a, b), labels);
}

BitextMiningResult bitext_mining(const torch::Tensor& source, const torch::Tensor& target,
                                 const std::vector<std::int64_t>& gold_targets) {
  check_matrix(source, "bitext mining");
  check_matrix(target, "bitext mining");
  if (source.size(1) != target.size(1))
    throw UsageError("bitext mining: source dim " + std::to_string(source.size(1)) +
                     " != target dim " + std::to_string(target.size(1)));
  if (source.size(0) == 0 || target.size(0) == 0) throw FormatError("bitext mining: no sentences");
  const auto n = static_cast<std::size_t>(source.size(0));
  std::vector<std::int64_t> gold = gold_targets;
  if (gold.empty()) {
    gold.resize(n);
    for (std::size_t i = 0; i < n; ++i) gold[i] = static_cast<std::int64_t>(i);
  }
  if (gold.size() != n)
    throw FormatError("bitext mining: " + std::to_string(n) + " source sentences but " +
                      std::to_string(gold.size()) + " gold targets");
  for (std::size_t i = 0; i < n; ++i)
    if (gold[i] < 0 || gold[i] >= target.size(0))
      throw FormatError("bitext mining: gold target " + std::to_string(gold[i]) + " of source " +
                        std::to_string(i) + " is out of range [0, " + std::to_string(target.size(0)) + ")");

  // Cosine as sentence-transformers' cos_sim: rows over max(|x|, 1e-12).
  namespace F = torch::nn::functional;
  const auto opts = F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12);
  const torch::Tensor q = F::normalize(source.to(torch::kFloat32), opts);
  const torch::Tensor c = F::normalize(target.to(torch::kFloat32), opts);
  search::TopKOptions topk;
  topk.k = 1;
  const search::TopKResult nearest = search::exact_topk(q, c, topk);
  const torch::Tensor idx = nearest.indices.select(1, 0).to(torch::kCPU, torch::kInt64).contiguous();

  BitextMiningResult r;
  r.predicted.assign(idx.data_ptr<std::int64_t>(), idx.data_ptr<std::int64_t>() + n);
  r.scores = bitext_scores(gold, r.predicted);
  return r;
}

}  // namespace kalm::eval
