// Non-retrieval metrics against scipy / scikit-learn / torch values written by
// tests/fixtures/eval/metrics/gen_metric_fixtures.py.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <cmath>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/eval/classification_metrics.h"
#include "kalm/eval/correlation.h"
#include "kalm/eval/embedding_metrics.h"
#include "kalm/eval/pair_metrics.h"
#include "kalm/eval/reranking_metrics.h"

namespace {

constexpr double kTol = 1e-9;

simdjson::dom::element fixture() {
  static simdjson::dom::parser parser;
  static simdjson::dom::element root =
      parser.load(std::string(KALM_FIXTURES_DIR) + "/eval/metrics/metrics.json");
  return root;
}

std::vector<double> doubles(simdjson::dom::array a) {
  std::vector<double> v;
  for (auto x : a) v.push_back(double(x));
  return v;
}
std::vector<std::int64_t> ints(simdjson::dom::array a) {
  std::vector<std::int64_t> v;
  for (auto x : a) v.push_back(int64_t(x));
  return v;
}
std::vector<int> labels_of(simdjson::dom::array a) {
  std::vector<int> v;
  for (auto x : a) v.push_back(static_cast<int>(int64_t(x)));
  return v;
}
torch::Tensor matrix(simdjson::dom::array rows) {
  std::vector<double> flat;
  std::int64_t n = 0, d = 0;
  for (auto r : rows) {
    auto row = doubles(r.get_array());
    d = static_cast<std::int64_t>(row.size());
    flat.insert(flat.end(), row.begin(), row.end());
    ++n;
  }
  return torch::tensor(flat, torch::kFloat64).reshape({n, d});
}

void check_pair_scores(const kalm::eval::PairClassificationScores& got, simdjson::dom::element want) {
  DOCTEST_CHECK(std::abs(got.accuracy - double(want["accuracy"])) <= kTol);
  DOCTEST_CHECK(std::abs(got.accuracy_threshold - double(want["accuracy_threshold"])) <= kTol);
  DOCTEST_CHECK(std::abs(got.f1 - double(want["f1"])) <= kTol);
  DOCTEST_CHECK(std::abs(got.f1_threshold - double(want["f1_threshold"])) <= kTol);
  DOCTEST_CHECK(std::abs(got.precision - double(want["precision"])) <= kTol);
  DOCTEST_CHECK(std::abs(got.recall - double(want["recall"])) <= kTol);
  DOCTEST_CHECK(std::abs(got.ap - double(want["ap"])) <= kTol);
}

}  // namespace

DOCTEST_TEST_CASE("Pearson and Spearman equal scipy.stats") {
  for (auto c : fixture()["correlation"].get_array()) {
    const auto x = doubles(c["x"]), y = doubles(c["y"]);
    DOCTEST_CHECK(std::abs(kalm::eval::pearson(x, y) - double(c["pearson"])) <= kTol);
    DOCTEST_CHECK(std::abs(kalm::eval::spearman(x, y) - double(c["spearman"])) <= kTol);
  }
  DOCTEST_CHECK(kalm::eval::average_ranks({3, 1, 3, 2, 3}) == std::vector<double>{4, 1, 4, 2, 4});
  DOCTEST_CHECK(std::isnan(kalm::eval::pearson({1, 1, 1}, {1, 2, 3})));   // constant: undefined
  DOCTEST_CHECK(std::isnan(kalm::eval::spearman({1, 2, 3}, {5, 5, 5})));
  DOCTEST_CHECK(kalm::eval::pearson({1, 2, 3}, {-2, -4, -6}) == doctest::Approx(-1.0).epsilon(1e-15));
  DOCTEST_CHECK_THROWS_AS(kalm::eval::pearson({1}, {1}), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::pearson({1, 2}, {1, 2, 3}), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::spearman({1, NAN}, {1, 2}), kalm::FormatError);
}

DOCTEST_TEST_CASE("paired similarities equal sklearn's paired distances") {
  auto e = fixture()["embeddings"];
  const auto a = matrix(e["a"]), b = matrix(e["b"]);
  const auto s = kalm::eval::paired_similarities(a, b);
  const auto cos = doubles(e["cosine"]), euc = doubles(e["euclidean"]), man = doubles(e["manhattan"]),
             dot = doubles(e["dot"]);
  DOCTEST_REQUIRE(s.cosine.size() == cos.size());
  for (std::size_t i = 0; i < cos.size(); ++i) {
    DOCTEST_CHECK(std::abs(s.cosine[i] - cos[i]) <= 1e-12);
    DOCTEST_CHECK(std::abs(s.euclidean[i] - euc[i]) <= 1e-12);
    DOCTEST_CHECK(std::abs(s.manhattan[i] - man[i]) <= 1e-12);
    DOCTEST_CHECK(std::abs(s.dot[i] - dot[i]) <= 1e-12);
  }
  DOCTEST_CHECK(s.cosine[7] == doctest::Approx(0.5).epsilon(1e-15));  // zero row, as sklearn
  DOCTEST_CHECK(std::abs(s.cosine[3] - 1.0) <= 1e-12);
  DOCTEST_CHECK(std::abs(s.cosine[11] + 1.0) <= 1e-12);
  // float32 input is converted, not refused.
  const auto s32 = kalm::eval::paired_similarities(a.to(torch::kFloat32), b.to(torch::kFloat32));
  DOCTEST_CHECK(std::abs(s32.cosine[0] - cos[0]) <= 1e-6);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::paired_similarities(a, b.slice(0, 0, 5)), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::paired_similarities(a[0], b[0]), kalm::UsageError);
}

DOCTEST_TEST_CASE("STS scores equal scipy on sklearn similarities") {
  auto e = fixture()["embeddings"];
  const auto sts = kalm::eval::sts_scores(matrix(e["a"]), matrix(e["b"]), doubles(e["gold"]));
  auto want = e["sts"];
  DOCTEST_CHECK(std::abs(sts.cosine_pearson - double(want["cosine_pearson"])) <= kTol);
  DOCTEST_CHECK(std::abs(sts.cosine_spearman - double(want["cosine_spearman"])) <= kTol);
  DOCTEST_CHECK(std::abs(sts.manhattan_pearson - double(want["manhattan_pearson"])) <= kTol);
  DOCTEST_CHECK(std::abs(sts.manhattan_spearman - double(want["manhattan_spearman"])) <= kTol);
  DOCTEST_CHECK(std::abs(sts.euclidean_pearson - double(want["euclidean_pearson"])) <= kTol);
  DOCTEST_CHECK(std::abs(sts.euclidean_spearman - double(want["euclidean_spearman"])) <= kTol);
  DOCTEST_CHECK(sts.spearman == sts.cosine_spearman);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::sts_scores(matrix(e["a"]), matrix(e["b"]), {1.0, 2.0}),
                          kalm::FormatError);
}

DOCTEST_TEST_CASE("pair classification equals mteb's threshold search and sklearn AP") {
  auto e = fixture()["embeddings"];
  const auto report = kalm::eval::pair_classification(matrix(e["a"]), matrix(e["b"]), labels_of(e["labels"]));
  auto want = e["pair_classification"];
  check_pair_scores(report.cosine, want["cosine"]);
  check_pair_scores(report.dot, want["dot"]);
  check_pair_scores(report.euclidean, want["euclidean"]);
  check_pair_scores(report.manhattan, want["manhattan"]);
  DOCTEST_CHECK(std::abs(report.max_accuracy - double(want["max_accuracy"])) <= kTol);
  DOCTEST_CHECK(std::abs(report.max_f1 - double(want["max_f1"])) <= kTol);
  DOCTEST_CHECK(std::abs(report.max_precision - double(want["max_precision"])) <= kTol);
  DOCTEST_CHECK(std::abs(report.max_recall - double(want["max_recall"])) <= kTol);
  DOCTEST_CHECK(std::abs(report.max_ap - double(want["max_ap"])) <= kTol);

  // Raw scores with heavy ties, similarity and distance direction, no positives.
  for (auto c : fixture()["pair_scores"].get_array()) {
    const auto got = kalm::eval::pair_classification_scores(doubles(c["scores"]), labels_of(c["labels"]),
                                                            bool(c["higher_is_similar"]));
    check_pair_scores(got, c["expected"]);
  }
  DOCTEST_CHECK_THROWS_AS(kalm::eval::pair_classification_scores({0.1, 0.2}, {0, 2}, true), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::pair_classification_scores({0.1}, {0, 1}, true), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::average_precision({}, {}), kalm::FormatError);
}

DOCTEST_TEST_CASE("hand-computed AP and threshold search") {
  // Scores 0.9(1) 0.8(0) 0.8(1) 0.1(0): points after 0.9 (P=1, R=1/2) and after
  // the tied 0.8 pair (P=2/3, R=1): AP = 1/2 + 1/2 * 2/3.
  DOCTEST_CHECK(kalm::eval::average_precision({1, 0, 1, 0}, {0.9, 0.8, 0.8, 0.1}) ==
                doctest::Approx(0.5 + 1.0 / 3).epsilon(1e-15));
  auto acc = kalm::eval::best_accuracy({0.9, 0.8, 0.3, 0.1}, {1, 1, 0, 0}, true);
  DOCTEST_CHECK(acc.accuracy == 1.0);
  DOCTEST_CHECK(acc.threshold == doctest::Approx(0.55));
  auto f1 = kalm::eval::best_f1({0.1, 0.2, 0.7, 0.9}, {1, 1, 0, 0}, false);  // distances
  DOCTEST_CHECK(f1.f1 == 1.0);
  DOCTEST_CHECK(f1.threshold == doctest::Approx(0.45));
}

DOCTEST_TEST_CASE("V-measure equals sklearn") {
  for (auto c : fixture()["clustering"].get_array()) {
    const auto s = kalm::eval::clustering_scores(ints(c["labels_true"]), ints(c["labels_pred"]));
    DOCTEST_CHECK(std::abs(s.v_measure - double(c["v_measure"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.homogeneity - double(c["homogeneity"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.completeness - double(c["completeness"])) <= kTol);
  }
  DOCTEST_CHECK(kalm::eval::v_measure({0, 0, 1, 1}, {4, 4, 2, 2}) == doctest::Approx(1.0));
  DOCTEST_CHECK_THROWS_AS(kalm::eval::v_measure({}, {}), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::v_measure({0, 1}, {0}), kalm::FormatError);
}

DOCTEST_TEST_CASE("accuracy, macro and weighted F1/precision/recall equal sklearn") {
  for (auto c : fixture()["classification"].get_array()) {
    const auto s = kalm::eval::classification_scores(ints(c["y_true"]), ints(c["y_pred"]));
    DOCTEST_CHECK(std::abs(s.accuracy - double(c["accuracy"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.f1 - double(c["f1"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.f1_weighted - double(c["f1_weighted"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.precision - double(c["precision"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.precision_weighted - double(c["precision_weighted"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.recall - double(c["recall"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.recall_weighted - double(c["recall_weighted"])) <= kTol);
  }
  DOCTEST_CHECK_THROWS_AS(kalm::eval::classification_scores({1, 2}, {1}), kalm::FormatError);
}

DOCTEST_TEST_CASE("bitext mining: cosine nearest neighbour, weighted P/R/F1 as mteb") {
  auto e = fixture()["bitext"];
  const auto r = kalm::eval::bitext_mining(matrix(e["source"]), matrix(e["target"]));
  DOCTEST_CHECK(r.predicted == ints(e["predicted"]));
  DOCTEST_CHECK(std::abs(r.scores.precision - double(e["precision"])) <= kTol);
  DOCTEST_CHECK(std::abs(r.scores.recall - double(e["recall"])) <= kTol);
  DOCTEST_CHECK(std::abs(r.scores.f1 - double(e["f1"])) <= kTol);
  DOCTEST_CHECK(std::abs(r.scores.accuracy - double(e["accuracy"])) <= kTol);

  // Explicit gold, duplicate targets: the lowest index wins a tie.
  auto src = torch::tensor({1.0, 0.0, 0.0, 1.0}, torch::kFloat32).reshape({2, 2});
  auto tgt = torch::tensor({0.0, 2.0, 3.0, 0.0, 1.0, 0.0}, torch::kFloat32).reshape({3, 2});
  const auto r2 = kalm::eval::bitext_mining(src, tgt, {2, 0});
  DOCTEST_CHECK(r2.predicted == std::vector<std::int64_t>{1, 0});
  DOCTEST_CHECK(r2.scores.accuracy == 0.5);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::bitext_mining(src, tgt, {0, 3}), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::bitext_mining(src, tgt, {0}), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::bitext_mining(src, tgt.slice(1, 0, 1)), kalm::UsageError);
}

DOCTEST_TEST_CASE("reranking MAP and MRR@10 as mteb 1.x RerankingEvaluator") {
  for (const char* which : {"distinct", "tied"}) {
    DOCTEST_CAPTURE(which);
    auto c = fixture()["reranking"][which];
    std::vector<kalm::eval::RerankingInstance> instances;
    for (auto inst : c["instances"].get_array())
      instances.push_back({doubles(inst["positive"]), doubles(inst["negative"])});
    const auto s = kalm::eval::reranking_scores(instances);
    DOCTEST_CHECK(std::abs(s.map - double(c["map"])) <= kTol);
    DOCTEST_CHECK(std::abs(s.mrr - double(c["mrr"])) <= kTol);
    DOCTEST_CHECK(s.evaluated == static_cast<std::size_t>(int64_t(c["evaluated"])));
    DOCTEST_CHECK(s.skipped == instances.size() - s.evaluated);
  }
  // Tied candidates keep candidate order: positives first.
  auto s = kalm::eval::reranking_scores({{{0.5}, {0.5, 0.9}}});
  DOCTEST_CHECK(s.mrr == 0.5);
  s = kalm::eval::reranking_scores({{{0.1}, std::vector<double>(12, 0.5)}});
  DOCTEST_CHECK(s.mrr == 0.0);  // first positive at rank 13 > 10
  DOCTEST_CHECK(kalm::eval::reranking_scores({{{0.1}, std::vector<double>(12, 0.5)}}, 13).mrr == 1.0 / 13);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::reranking_scores({{{0.5}, {}}}), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::reranking_scores({{{0.5}, {0.1}}}, 0), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::reranking_scores({{{NAN}, {0.1}}}), kalm::FormatError);
}
