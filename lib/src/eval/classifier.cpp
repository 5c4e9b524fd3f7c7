#include "kalm/eval/classifier.h"

#include <algorithm>
#include <map>

#include "kalm/error.h"

namespace kalm::eval {
namespace {

torch::Tensor as_features(const torch::Tensor& x, const char* what) {
  if (!x.defined() || x.dim() != 2) throw UsageError(std::string(what) + ": expected a 2-D [N, D] tensor");
  if (!x.is_floating_point()) throw UsageError(std::string(what) + ": expected a floating-point tensor");
  return x.to(torch::kCPU, torch::kFloat64).contiguous();
}

// Uniform in [0, n): a fixed algorithm (not std::uniform_int_distribution, whose
// output is library-specific) so that a seed gives the same subsets everywhere.
std::size_t draw_below(std::mt19937_64& rng, std::size_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t v;
  do v = rng();
  while (v >= limit);
  return static_cast<std::size_t>(v % n);
}

}  // namespace

std::vector<std::int64_t> LogisticRegressionModel::predict(const torch::Tensor& x_in) const {
  torch::Tensor x = as_features(x_in, "predict");
  if (x.size(1) != weight.size(0)) throw UsageError("predict: features have " + std::to_string(x.size(1)) +
                                                    " columns, the probe was fitted on " + std::to_string(weight.size(0)));
  torch::Tensor logits = x.mm(weight) + bias;
  std::vector<std::int64_t> out(static_cast<std::size_t>(x.size(0)));
  auto acc = logits.accessor<double, 2>();
  for (std::int64_t i = 0; i < x.size(0); ++i) {
    if (weight.size(1) == 1) {
      out[static_cast<std::size_t>(i)] = acc[i][0] > 0 ? classes[1] : classes[0];
      continue;
    }
    std::int64_t best = 0;
    for (std::int64_t j = 1; j < logits.size(1); ++j)
      if (acc[i][j] > acc[i][best]) best = j;
    out[static_cast<std::size_t>(i)] = classes[static_cast<std::size_t>(best)];
  }
  return out;
}

LogisticRegressionModel fit_logistic_regression(const torch::Tensor& x_in, const std::vector<std::int64_t>& y,
                                                const LogisticRegressionOptions& options) {
  if (!(options.c > 0) || !std::isfinite(options.c)) throw UsageError("logistic regression: C must be > 0");
  if (options.max_iter < 1) throw UsageError("logistic regression: max_iter must be >= 1");
  if (!(options.tolerance > 0)) throw UsageError("logistic regression: tolerance must be > 0");
  torch::Tensor x = as_features(x_in, "logistic regression");
  if (static_cast<std::size_t>(x.size(0)) != y.size())
    throw FormatError("logistic regression: " + std::to_string(x.size(0)) + " rows but " + std::to_string(y.size()) +
                      " labels");
  if (y.empty()) throw FormatError("logistic regression: no training rows");

  LogisticRegressionModel model;
  model.classes = y;
  std::sort(model.classes.begin(), model.classes.end());
  model.classes.erase(std::unique(model.classes.begin(), model.classes.end()), model.classes.end());
  const std::int64_t d = x.size(1);
  const auto n_classes = static_cast<std::int64_t>(model.classes.size());
  if (n_classes < 2) {
    // One class seen: the probe can only predict it (sklearn refuses; mteb never gets here).
    model.weight = torch::zeros({d, 1}, torch::kFloat64);
    model.bias = torch::zeros({1}, torch::kFloat64);
    model.classes.push_back(model.classes[0]);
    model.bias.fill_(-1.0);
    return model;
  }
  std::map<std::int64_t, std::int64_t> column;
  for (std::int64_t j = 0; j < n_classes; ++j) column[model.classes[static_cast<std::size_t>(j)]] = j;
  std::vector<std::int64_t> target(y.size());
  for (std::size_t i = 0; i < y.size(); ++i) target[i] = column[y[i]];
  torch::Tensor t = torch::tensor(target, torch::kInt64);

  const bool binary = n_classes == 2;
  const std::int64_t outputs = binary ? 1 : n_classes;
  torch::Tensor w = torch::zeros({d, outputs}, torch::kFloat64).requires_grad_(true);
  torch::Tensor b = torch::zeros({outputs}, torch::kFloat64).requires_grad_(true);
  const double penalty = 0.5 / options.c;
  const auto n = static_cast<double>(y.size());

  torch::optim::LBFGS optimizer(
      std::vector<torch::Tensor>{w, b},
      torch::optim::LBFGSOptions(1.0)
          .max_iter(options.max_iter)
          .max_eval(options.max_iter * 5 / 4 + 1)
          .history_size(10)
          .tolerance_grad(options.tolerance * std::max(1.0, n))
          .tolerance_change(1e-12)
          .line_search_fn("strong_wolfe"));
  torch::Tensor tf = t.to(torch::kFloat64).unsqueeze(1);
  auto closure = [&] {
    optimizer.zero_grad();
    torch::Tensor logits = x.mm(w) + b;
    torch::Tensor data_loss = binary
        ? torch::binary_cross_entropy_with_logits(logits, tf, {}, {}, at::Reduction::Sum)
        : torch::nn::functional::cross_entropy(logits, t,
                                               torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    torch::Tensor loss = data_loss + penalty * w.pow(2).sum();
    loss.backward();
    return loss;
  };
  optimizer.step(closure);
  model.weight = w.detach().clone();
  model.bias = b.detach().clone();
  return model;
}

std::vector<std::size_t> undersample(std::vector<std::size_t>& order, const std::vector<std::int64_t>& labels,
                                     int samples_per_label, std::mt19937_64& rng) {
  // Fisher-Yates from the back, as numpy's shuffle walks.
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[draw_below(rng, i)]);
  std::map<std::int64_t, int> taken;
  std::vector<std::size_t> kept;
  for (std::size_t i : order) {
    int& count = taken[labels.at(i)];
    if (count < samples_per_label) {
      kept.push_back(i);
      ++count;
    }
  }
  return kept;
}

ClassificationReport classification_experiments(const torch::Tensor& train_x_in, const std::vector<std::int64_t>& train_y,
                                                const torch::Tensor& test_x_in, const std::vector<std::int64_t>& test_y,
                                                const ClassificationProtocol& protocol) {
  if (protocol.n_experiments < 1) throw UsageError("classification: n_experiments must be >= 1");
  if (protocol.samples_per_label < 1) throw UsageError("classification: samples_per_label must be >= 1");
  torch::Tensor train_x = as_features(train_x_in, "classification train");
  torch::Tensor test_x = as_features(test_x_in, "classification test");
  if (static_cast<std::size_t>(train_x.size(0)) != train_y.size() || train_y.empty())
    throw FormatError("classification: " + std::to_string(train_x.size(0)) + " training rows but " +
                      std::to_string(train_y.size()) + " labels");
  if (static_cast<std::size_t>(test_x.size(0)) != test_y.size() || test_y.empty())
    throw FormatError("classification: " + std::to_string(test_x.size(0)) + " test rows but " +
                      std::to_string(test_y.size()) + " labels");

  std::mt19937_64 rng(protocol.seed);
  std::vector<std::size_t> order(train_y.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  ClassificationReport report;
  for (int e = 0; e < protocol.n_experiments; ++e) {
    std::vector<std::size_t> kept = undersample(order, train_y, protocol.samples_per_label, rng);
    std::vector<std::int64_t> idx(kept.begin(), kept.end());
    std::vector<std::int64_t> y;
    y.reserve(kept.size());
    for (auto i : kept) y.push_back(train_y[i]);
    auto model = fit_logistic_regression(train_x.index_select(0, torch::tensor(idx, torch::kInt64)), y, protocol.probe);
    auto s = classification_scores(test_y, model.predict(test_x));
    report.accuracy_per_experiment.push_back(s.accuracy);
    report.mean.accuracy += s.accuracy;
    report.mean.f1 += s.f1;
    report.mean.f1_weighted += s.f1_weighted;
    report.mean.precision += s.precision;
    report.mean.precision_weighted += s.precision_weighted;
    report.mean.recall += s.recall;
    report.mean.recall_weighted += s.recall_weighted;
  }
  const double k = protocol.n_experiments;
  auto& m = report.mean;
  m.accuracy /= k;
  m.f1 /= k;
  m.f1_weighted /= k;
  m.precision /= k;
  m.precision_weighted /= k;
  m.recall /= k;
  m.recall_weighted /= k;
  return report;
}

}  // namespace kalm::eval
