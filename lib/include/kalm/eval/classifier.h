#pragma once
// mteb's classification protocol on embeddings: a logistic-regression probe
// trained on an undersampled training split, repeated n_experiments times.
//
// Logistic regression (fit_logistic_regression) minimises sklearn's
// LogisticRegression(C, penalty="l2", fit_intercept=True, solver="lbfgs")
// objective, up to a constant factor:
//     sum_i CE(x_i W + b, y_i) + ||W||^2 / (2 C)          (intercept not penalised)
// multinomial (softmax) for three or more classes; for two classes one weight
// vector with the logistic loss, as sklearn fits binary problems (a two-class
// softmax would halve the effective penalty). Optimiser: LibTorch's L-BFGS
// (history 10, strong-Wolfe line search) for at most max_iter iterations in
// float64, stopping when the largest gradient component falls below
// tolerance x max(1, n) (sklearn's lbfgs tol=1e-4 is on the objective divided by n).
// Same objective as sklearn, but a different L-BFGS implementation and stopping
// rule: after max_iter=100 iterations (mteb's setting) both are near the same
// optimum, so predictions agree on most rows, not bit for bit.
//
// Protocol (classification_experiments, mteb AbsTaskClassification +
// logRegClassificationEvaluator): the training rows' indices are shuffled with
// a seeded generator once per experiment (the permutation carries over from
// one experiment to the next, as mteb's in-place np.random.shuffle does); the
// first samples_per_label rows of each label in that order form the training
// set; the probe is fitted on it and scores the whole test split; scores are
// averaged over experiments. kalm's generator is std::mt19937_64 seeded with
// `seed`, not numpy's global RandomState, so the drawn subsets differ from
// mteb's: expect scores within the experiment-to-experiment spread, not equal.
// The probe only knows labels present in its training set (as sklearn).
//
// Shapes: features [N, D] any floating dtype (used as float64, CPU).
// Thread safety: pure functions (LibTorch's intra-op pool inside).
// Throws UsageError for bad options (C <= 0, max_iter < 1, n_experiments < 1,
// samples_per_label < 1); FormatError when rows and labels disagree in number
// or a split is empty.

#include <torch/torch.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kalm/eval/classification_metrics.h"

namespace kalm::eval {

struct LogisticRegressionOptions {
  double c = 1.0;      // inverse L2 strength (sklearn's C)
  int max_iter = 100;  // L-BFGS iterations (mteb: 100)
  double tolerance = 1e-4;  // stop when max |gradient| < tolerance x max(1, rows)
};

// A fitted probe: classes[j] is the label of output column j.
struct LogisticRegressionModel {
  std::vector<std::int64_t> classes;  // sorted
  torch::Tensor weight;               // [D, C'] float64; C' = 1 for two classes
  torch::Tensor bias;                 // [C'] float64
  // Predicted label per row of x [M, D]; ties go to the lower class.
  std::vector<std::int64_t> predict(const torch::Tensor& x) const;
};

LogisticRegressionModel fit_logistic_regression(const torch::Tensor& x, const std::vector<std::int64_t>& y,
                                                const LogisticRegressionOptions& options = {});

struct ClassificationProtocol {
  int n_experiments = 10;     // mteb default
  int samples_per_label = 8;  // mteb default (tasks may override)
  std::uint64_t seed = 42;    // mteb's seed
  LogisticRegressionOptions probe;
};

struct ClassificationReport {
  ClassificationScores mean;               // each score averaged over experiments
  std::vector<double> accuracy_per_experiment;
};

ClassificationReport classification_experiments(const torch::Tensor& train_x, const std::vector<std::int64_t>& train_y,
                                                const torch::Tensor& test_x, const std::vector<std::int64_t>& test_y,
                                                const ClassificationProtocol& protocol = {});

// The indices kept by one undersampling round: `order` is shuffled in place with
// `rng`, then the first `samples_per_label` indices of each label are kept, in
// the shuffled order. Exposed for tests.
std::vector<std::size_t> undersample(std::vector<std::size_t>& order, const std::vector<std::int64_t>& labels,
                                     int samples_per_label, std::mt19937_64& rng);

}  // namespace kalm::eval
