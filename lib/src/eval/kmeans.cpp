#include "kalm/eval/kmeans.h"

#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "kalm/error.h"
#include "kalm/eval/classification_metrics.h"

namespace kalm::eval {
namespace {

// Fixed algorithms (not <random>'s distributions, whose output is
// library-specific) so that a seed gives the same clusters everywhere.
std::size_t draw_below(std::mt19937_64& rng, std::size_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t v;
  do v = rng();
  while (v >= limit);
  return static_cast<std::size_t>(v % n);
}
double draw_unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Squared distances [N, K] between rows and centres.
torch::Tensor squared_distances(const torch::Tensor& x, const torch::Tensor& centres) {
  torch::Tensor d = x.pow(2).sum(1, true) - 2 * x.mm(centres.t()) + centres.pow(2).sum(1).unsqueeze(0);
  return d.clamp_min(0);
}

// Index of the first minimum per row (argmin's tie order is unspecified).
std::vector<std::int64_t> nearest(const torch::Tensor& d) {
  auto acc = d.accessor<double, 2>();
  std::vector<std::int64_t> out(static_cast<std::size_t>(d.size(0)));
  for (std::int64_t i = 0; i < d.size(0); ++i) {
    std::int64_t best = 0;
    for (std::int64_t j = 1; j < d.size(1); ++j)
      if (acc[i][j] < acc[i][best]) best = j;
    out[static_cast<std::size_t>(i)] = best;
  }
  return out;
}

// Greedy k-means++ (sklearn's _kmeans_plusplus).
torch::Tensor kmeans_plusplus(const torch::Tensor& x, std::int64_t k, std::mt19937_64& rng) {
  const std::int64_t n = x.size(0);
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
  torch::Tensor centres = torch::empty({k, x.size(1)}, torch::kFloat64);
  centres[0] = x[static_cast<std::int64_t>(draw_below(rng, static_cast<std::size_t>(n)))];
  torch::Tensor closest = squared_distances(x, centres.narrow(0, 0, 1)).squeeze(1);  // [N]
  for (std::int64_t c = 1; c < k; ++c) {
    std::vector<double> cumulative(static_cast<std::size_t>(n));
    auto acc = closest.accessor<double, 1>();
    double total = 0;
    for (std::int64_t i = 0; i < n; ++i) cumulative[static_cast<std::size_t>(i)] = total += acc[i];
    std::int64_t best_candidate = -1;
    double best_potential = std::numeric_limits<double>::infinity();
    torch::Tensor best_closest;
    for (int t = 0; t < trials; ++t) {
      std::int64_t candidate;
      if (total <= 0) {
        candidate = static_cast<std::int64_t>(draw_below(rng, static_cast<std::size_t>(n)));
      } else {
        const double r = draw_unit(rng) * total;
        candidate = std::upper_bound(cumulative.begin(), cumulative.end(), r) - cumulative.begin();
        if (candidate >= n) candidate = n - 1;
      }
      torch::Tensor d = squared_distances(x, x.narrow(0, candidate, 1)).squeeze(1);
      torch::Tensor merged = torch::minimum(closest, d);
      const double potential = merged.sum().item<double>();
      if (potential < best_potential) {
        best_potential = potential;
        best_candidate = candidate;
        best_closest = merged;
      }
    }
    centres[c] = x[best_candidate];
    closest = best_closest;
  }
  return centres;
}

}  // namespace

std::vector<std::int64_t> minibatch_kmeans(const torch::Tensor& x_in, const KMeansOptions& o) {
  if (!x_in.defined() || x_in.dim() != 2 || !x_in.is_floating_point())
    throw UsageError("k-means: expected a 2-D floating-point [N, D] tensor");
  torch::Tensor x = x_in.to(torch::kCPU, torch::kFloat64).contiguous();
  const std::int64_t n = x.size(0);
  if (o.k < 1 || o.k > n)
    throw UsageError("k-means: k = " + std::to_string(o.k) + " must be in [1, " + std::to_string(n) + "] (rows)");
  if (o.batch_size < 1 || o.max_iter < 1) throw UsageError("k-means: batch_size and max_iter must be >= 1");
  std::mt19937_64 rng(o.seed);

  const std::int64_t batch = std::min(o.batch_size, n);
  const std::int64_t init_size = std::min<std::int64_t>(3 * o.batch_size, n);
  torch::Tensor init_rows = x;
  if (init_size < n) {
    std::vector<std::int64_t> idx(static_cast<std::size_t>(init_size));
    for (auto& i : idx) i = static_cast<std::int64_t>(draw_below(rng, static_cast<std::size_t>(n)));
    init_rows = x.index_select(0, torch::tensor(idx, torch::kInt64));
  }
  torch::Tensor centres = kmeans_plusplus(init_rows, o.k, rng);
  std::vector<double> counts(static_cast<std::size_t>(o.k), 0.0);

  const std::int64_t steps = std::max<std::int64_t>(1, (static_cast<std::int64_t>(o.max_iter) * n) / batch);
  const double alpha = std::min(1.0, 2.0 * static_cast<double>(batch) / static_cast<double>(n + 1));
  double ewa = -1, best_ewa = std::numeric_limits<double>::infinity();
  int no_improvement = 0;
  std::vector<std::int64_t> idx(static_cast<std::size_t>(batch));
  for (std::int64_t step = 0; step < steps; ++step) {
    for (auto& i : idx) i = static_cast<std::int64_t>(draw_below(rng, static_cast<std::size_t>(n)));
    torch::Tensor rows = x.index_select(0, torch::tensor(idx, torch::kInt64));
    torch::Tensor d = squared_distances(rows, centres);
    auto labels = nearest(d);
    auto dacc = d.accessor<double, 2>();
    double inertia = 0;
    for (std::int64_t r = 0; r < batch; ++r) inertia += dacc[r][labels[static_cast<std::size_t>(r)]];
    inertia /= static_cast<double>(batch);
    // Each centre becomes the running mean of every row it has been given.
    torch::Tensor sums = torch::zeros_like(centres);
    std::vector<double> batch_counts(static_cast<std::size_t>(o.k), 0.0);
    sums.index_add_(0, torch::tensor(labels, torch::kInt64), rows);
    for (auto l : labels) batch_counts[static_cast<std::size_t>(l)] += 1;
    for (std::int64_t c = 0; c < o.k; ++c) {
      const double add = batch_counts[static_cast<std::size_t>(c)];
      if (add == 0) continue;
      double& count = counts[static_cast<std::size_t>(c)];
      centres[c].mul_(count / (count + add)).add_(sums[c] / (count + add));
      count += add;
    }
    if (step == 0) continue;  // sklearn skips the first step's inertia
    ewa = ewa < 0 ? inertia : ewa * (1 - alpha) + inertia * alpha;
    if (ewa < best_ewa) {
      best_ewa = ewa;
      no_improvement = 0;
    } else if (++no_improvement >= o.max_no_improvement) {
      break;
    }
  }
  return nearest(squared_distances(x, centres));
}

double clustering_v_measure(const torch::Tensor& x, const std::vector<std::int64_t>& labels, std::int64_t batch_size,
                            std::uint64_t seed) {
  if (!x.defined() || x.dim() != 2 || static_cast<std::size_t>(x.size(0)) != labels.size())
    throw FormatError("clustering: " + std::to_string(x.defined() && x.dim() > 0 ? x.size(0) : 0) + " rows but " +
                      std::to_string(labels.size()) + " labels");
  std::set<std::int64_t> distinct(labels.begin(), labels.end());
  KMeansOptions o;
  o.k = static_cast<std::int64_t>(distinct.size());
  o.batch_size = batch_size;
  o.seed = seed;
  return v_measure(labels, minibatch_kmeans(x, o));
}

}  // namespace kalm::eval
