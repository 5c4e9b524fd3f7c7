#pragma once
// Mini-batch k-means and mteb's clustering protocol.
//
// minibatch_kmeans follows sklearn.cluster.MiniBatchKMeans (sklearn >= 1.2,
// as mteb 1.x calls it: n_clusters = number of gold labels, batch_size = 500,
// n_init = "auto" = one k-means++ run, max_iter = 100):
// - init: greedy k-means++ (2 + floor(ln k) candidate centres per step, the
//   candidate that lowers the potential most wins) on a random subset of
//   min(3 x batch_size, n) rows;
// - steps: (max_iter x n) / batch_size updates, each on batch_size rows drawn
//   with replacement; every centre moves to the running mean of the rows ever
//   assigned to it (per-centre learning rate 1 / count);
// - early stop: an exponentially weighted average of the batch inertia that has
//   not improved for 10 steps (sklearn's max_no_improvement=10, tol=0);
// - labels: each row's nearest final centre (lowest index on ties).
// Not reproduced: sklearn's reassignment of centres with tiny counts
// (reassignment_ratio=0.01) and its random streams (numpy's RandomState);
// kalm draws from std::mt19937_64(seed), so labels agree with sklearn's only up
// to the run-to-run variance k-means already has.
//
// clustering_v_measure: mteb ClusteringEvaluator: cluster, then sklearn's
// v_measure_score against the gold labels.
//
// Shapes: x [N, D] any floating dtype (used as float64, CPU).
// Thread safety: pure functions. Throws UsageError for k < 1, k > N,
// batch_size < 1, max_iter < 1; FormatError when labels and rows differ in number.

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace kalm::eval {

struct KMeansOptions {
  std::int64_t k = 2;
  std::int64_t batch_size = 500;
  int max_iter = 100;
  int max_no_improvement = 10;
  std::uint64_t seed = 42;
};

// Cluster index per row, in [0, k).
std::vector<std::int64_t> minibatch_kmeans(const torch::Tensor& x, const KMeansOptions& options);

// V-measure of minibatch_kmeans with k = number of distinct gold labels.
double clustering_v_measure(const torch::Tensor& x, const std::vector<std::int64_t>& labels,
                            std::int64_t batch_size = 500, std::uint64_t seed = 42);

}  // namespace kalm::eval
