// The logistic-regression probe against sklearn (tests/fixtures/eval/probe/,
// gen_probe.py), mteb's undersampling protocol, and mini-batch k-means.
#include <doctest/doctest.h>

#include <simdjson.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/eval/classifier.h"
#include "kalm/eval/kmeans.h"

using namespace kalm::eval;

namespace {

// The matrix gen_probe.py builds.
torch::Tensor probe_features(std::int64_t n, std::int64_t d) {
  torch::Tensor x = torch::empty({n, d}, torch::kFloat64);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j)
      x[i][j] = std::sin(1.3 * static_cast<double>(i) + 0.7 * static_cast<double>(j)) + 0.25 * static_cast<double>((i * 7 + j * 3) % 5);
  return x;
}

// Points around `centres` (one blob per row of centres), labelled by blob.
std::pair<torch::Tensor, std::vector<std::int64_t>> blobs(const std::vector<std::vector<double>>& centres, int per_blob) {
  std::vector<double> data;
  std::vector<std::int64_t> labels;
  for (std::size_t c = 0; c < centres.size(); ++c)
    for (int i = 0; i < per_blob; ++i) {
      for (std::size_t j = 0; j < centres[c].size(); ++j)
        data.push_back(centres[c][j] + 0.1 * std::sin(3.1 * i + 1.7 * static_cast<double>(j) + static_cast<double>(c)));
      labels.push_back(static_cast<std::int64_t>(c));
    }
  const auto d = static_cast<std::int64_t>(centres[0].size());
  return {torch::tensor(data, torch::kFloat64).reshape({-1, d}), labels};
}

}  // namespace

DOCTEST_TEST_CASE("logistic regression reaches sklearn's optimum (binary and multinomial, two C values)") {
  simdjson::dom::parser parser;
  simdjson::dom::element root = parser.load(std::string(KALM_FIXTURES_DIR) + "/eval/probe/expected.json");
  int cases = 0;
  for (simdjson::dom::element c : root["cases"].get_array()) {
    const auto classes = static_cast<std::int64_t>(c["classes"].get_int64());
    const double C = c["C"].get_double();
    DOCTEST_CAPTURE(classes);
    DOCTEST_CAPTURE(C);
    torch::Tensor x = probe_features(30, 4);
    std::vector<std::int64_t> y;
    for (std::int64_t i = 0; i < 30; ++i) y.push_back(i % classes);
    LogisticRegressionOptions o;
    o.c = C;
    o.max_iter = 1000;
    o.tolerance = 1e-10;
    auto model = fit_logistic_regression(x, y, o);
    DOCTEST_CHECK(model.classes.size() == static_cast<std::size_t>(classes));
    // sklearn's coef_ is [C', D]; ours [D, C']. sklearn 1.2 stops on its ftol with
    // gradients near 1e-4 (multinomial), about 1e-6 away from the optimum: hence 1e-4.
    std::vector<std::vector<double>> coef;
    for (simdjson::dom::element row : c["coef"].get_array()) {
      coef.emplace_back();
      for (simdjson::dom::element v : row.get_array()) coef.back().push_back(v.get_double());
    }
    DOCTEST_REQUIRE(static_cast<std::int64_t>(coef.size()) == model.weight.size(1));
    for (std::size_t k = 0; k < coef.size(); ++k)
      for (std::size_t j = 0; j < 4; ++j)
        DOCTEST_CHECK(model.weight[static_cast<std::int64_t>(j)][static_cast<std::int64_t>(k)].item<double>() ==
                      doctest::Approx(coef[k][j]).epsilon(1e-3).scale(0.1));
    // Softmax intercepts are defined up to a common shift: compare centred.
    std::vector<double> b;
    for (simdjson::dom::element v : c["intercept"].get_array()) b.push_back(v.get_double());
    double mean_ours = model.bias.mean().item<double>(), mean_theirs = 0;
    for (double v : b) mean_theirs += v / static_cast<double>(b.size());
    if (b.size() == 1) mean_ours = mean_theirs = 0;
    for (std::size_t k = 0; k < b.size(); ++k)
      DOCTEST_CHECK(model.bias[static_cast<std::int64_t>(k)].item<double>() - mean_ours ==
                    doctest::Approx(b[k] - mean_theirs).epsilon(1e-3).scale(0.1));
    std::vector<std::int64_t> expected;
    for (simdjson::dom::element v : c["predict"].get_array()) expected.push_back(v.get_int64());
    DOCTEST_CHECK(model.predict(x) == expected);
    ++cases;
  }
  DOCTEST_CHECK(cases == 4);
}

DOCTEST_TEST_CASE("logistic regression: separable blobs, string of errors") {
  auto [x, y] = blobs({{0, 0}, {3, 0}, {0, 3}}, 6);
  auto model = fit_logistic_regression(x, y);
  DOCTEST_CHECK(model.predict(x) == y);
  DOCTEST_CHECK(model.predict(torch::tensor({{2.9, 0.1}}, torch::kFloat64)) == std::vector<std::int64_t>{1});
  DOCTEST_CHECK_THROWS_AS(fit_logistic_regression(x, {0, 1}), kalm::FormatError);
  LogisticRegressionOptions bad;
  bad.c = 0;
  DOCTEST_CHECK_THROWS_AS(fit_logistic_regression(x, y, bad), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(model.predict(torch::zeros({2, 3}, torch::kFloat64)), kalm::UsageError);
  // One class seen: that class is all it predicts.
  auto single = fit_logistic_regression(x.narrow(0, 0, 3), {5, 5, 5});
  DOCTEST_CHECK(single.predict(x.narrow(0, 0, 2)) == std::vector<std::int64_t>{5, 5});
}

DOCTEST_TEST_CASE("undersampling: samples_per_label per label, seeded, the permutation carries over") {
  std::vector<std::int64_t> labels = {0, 0, 0, 0, 1, 1, 1, 2};
  std::vector<std::size_t> order = {0, 1, 2, 3, 4, 5, 6, 7};
  std::mt19937_64 rng(42);
  auto kept = undersample(order, labels, 2, rng);
  DOCTEST_CHECK(kept.size() == 5);  // 2 + 2 + 1
  std::map<std::int64_t, int> per_label;
  for (auto i : kept) per_label[labels[i]]++;
  DOCTEST_CHECK(per_label == std::map<std::int64_t, int>{{0, 2}, {1, 2}, {2, 1}});
  auto first_order = order;
  auto kept2 = undersample(order, labels, 2, rng);
  DOCTEST_CHECK(order != first_order);  // reshuffled from the previous permutation
  std::vector<std::size_t> order_b = {0, 1, 2, 3, 4, 5, 6, 7};
  std::mt19937_64 rng_b(42);
  DOCTEST_CHECK(undersample(order_b, labels, 2, rng_b) == kept);
}

DOCTEST_TEST_CASE("classification protocol: perfect on separable data, averaged over experiments") {
  auto [train_x, train_y] = blobs({{0, 0, 1}, {4, 0, 1}, {0, 4, 1}}, 12);
  auto [test_x, test_y] = blobs({{0.2, 0, 1}, {4, 0.3, 1}, {0, 3.8, 1}}, 5);
  ClassificationProtocol p;
  p.n_experiments = 4;
  p.samples_per_label = 3;
  auto r = classification_experiments(train_x, train_y, test_x, test_y, p);
  DOCTEST_CHECK(r.accuracy_per_experiment.size() == 4);
  DOCTEST_CHECK(r.mean.accuracy == 1.0);
  DOCTEST_CHECK(r.mean.f1 == 1.0);
  // Swapped test labels: everything wrong.
  std::vector<std::int64_t> wrong;
  for (auto l : test_y) wrong.push_back((l + 1) % 3);
  DOCTEST_CHECK(classification_experiments(train_x, train_y, test_x, wrong, p).mean.accuracy == 0.0);
  p.n_experiments = 0;
  DOCTEST_CHECK_THROWS_AS(classification_experiments(train_x, train_y, test_x, test_y, p), kalm::UsageError);
}

DOCTEST_TEST_CASE("mini-batch k-means: separated blobs are found, seeds are reproducible") {
  auto [x, y] = blobs({{0, 0}, {5, 5}, {-5, 5}, {5, -5}}, 10);
  KMeansOptions o;
  o.k = 4;
  o.batch_size = 8;  // many mini-batch steps
  auto labels = minibatch_kmeans(x, o);
  DOCTEST_CHECK(labels.size() == 40);
  // Each blob gets one cluster of its own (a bijection between labels).
  std::map<std::int64_t, std::int64_t> to_cluster;
  std::set<std::int64_t> used;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    auto [it, fresh] = to_cluster.emplace(y[i], labels[i]);
    DOCTEST_CHECK(it->second == labels[i]);
    if (fresh) used.insert(labels[i]);
  }
  DOCTEST_CHECK(used.size() == 4);
  DOCTEST_CHECK(clustering_v_measure(x, y, 500, 7) == doctest::Approx(1.0));
  DOCTEST_CHECK(minibatch_kmeans(x, o) == labels);
  o.k = 41;
  DOCTEST_CHECK_THROWS_AS(minibatch_kmeans(x, o), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(clustering_v_measure(x, {0, 1}), kalm::FormatError);
}
