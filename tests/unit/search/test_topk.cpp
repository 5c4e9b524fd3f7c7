#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "kalm/error.h"
#include "kalm/search/topk.h"

namespace {
// Reference: full sort of every score by (score desc, index asc).
std::vector<std::vector<std::int64_t>> brute_force(const torch::Tensor& q, const torch::Tensor& c, std::int64_t k) {
  auto scores = torch::matmul(q.to(torch::kFloat32), c.to(torch::kFloat32).t()).contiguous();
  std::vector<std::vector<std::int64_t>> out;
  for (std::int64_t i = 0; i < q.size(0); ++i) {
    std::vector<std::int64_t> idx(static_cast<std::size_t>(c.size(0)));
    std::iota(idx.begin(), idx.end(), 0);
    auto row = scores[i];
    const float* s = row.data_ptr<float>();
    std::stable_sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) { return s[a] > s[b]; });
    idx.resize(static_cast<std::size_t>(std::min(k, c.size(0))));
    out.push_back(idx);
  }
  return out;
}
std::vector<std::int64_t> row_of(const torch::Tensor& t, std::int64_t i) {
  auto r = t[i].contiguous();
  return std::vector<std::int64_t>(r.data_ptr<std::int64_t>(), r.data_ptr<std::int64_t>() + r.numel());
}
}  // namespace

DOCTEST_TEST_CASE("exact top-k equals a full sort, across block boundaries") {
  torch::manual_seed(1);
  auto q = torch::randn({37, 16});
  auto c = torch::randn({203, 16});
  for (std::int64_t block : {7, 64, 1000}) {
    kalm::search::TopKOptions opt;
    opt.k = 10;
    opt.corpus_block = block;
    opt.query_block = 5;
    auto res = kalm::search::exact_topk(q, c, opt);
    auto ref = brute_force(q, c, 10);
    DOCTEST_REQUIRE(res.indices.sizes() == torch::IntArrayRef({37, 10}));
    for (std::int64_t i = 0; i < 37; ++i) DOCTEST_CHECK(row_of(res.indices, i) == ref[static_cast<std::size_t>(i)]);
    auto expected_scores = torch::matmul(q, c.t()).gather(1, res.indices);
    DOCTEST_CHECK(torch::allclose(res.scores, expected_scores, 1e-5, 1e-5));
  }
}

DOCTEST_TEST_CASE("ties: score descending, then corpus index ascending") {
  // Corpus rows 0..9 where rows 2, 5, 7 and 9 tie for the best score and rows
  // 1, 4 tie for the next; a block size of 3 puts the ties in different blocks.
  auto c = torch::zeros({10, 2});
  for (int i : {2, 5, 7, 9}) c[i][0] = 1.0;
  for (int i : {1, 4}) c[i][0] = 0.5;
  auto q = torch::tensor({{1.0f, 0.0f}});
  kalm::search::TopKOptions opt;
  opt.k = 5;
  opt.corpus_block = 3;
  auto res = kalm::search::exact_topk(q, c, opt);
  DOCTEST_CHECK(row_of(res.indices, 0) == std::vector<std::int64_t>{2, 5, 7, 9, 1});
  opt.k = 3;
  res = kalm::search::exact_topk(q, c, opt);
  DOCTEST_CHECK(row_of(res.indices, 0) == std::vector<std::int64_t>{2, 5, 7});
}

DOCTEST_TEST_CASE("k larger than the corpus returns every row") {
  auto q = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}});
  auto c = torch::tensor({{0.1f, 0.9f}, {0.8f, 0.2f}, {0.5f, 0.5f}});
  kalm::search::TopKOptions opt;
  opt.k = 10;
  auto res = kalm::search::exact_topk(q, c, opt);
  DOCTEST_CHECK(res.indices.size(1) == 3);
  DOCTEST_CHECK(row_of(res.indices, 0) == std::vector<std::int64_t>{1, 2, 0});
  DOCTEST_CHECK(row_of(res.indices, 1) == std::vector<std::int64_t>{0, 2, 1});
  DOCTEST_CHECK(res.scores[0][0].item<float>() == doctest::Approx(0.8f));
}

DOCTEST_TEST_CASE("bf16 and f16 inputs are searched in f32") {
  torch::manual_seed(2);
  auto q = torch::randn({4, 8});
  auto c = torch::randn({50, 8});
  kalm::search::TopKOptions opt;
  opt.k = 5;
  auto ref = kalm::search::exact_topk(q.to(torch::kBFloat16).to(torch::kFloat32),
                                      c.to(torch::kBFloat16).to(torch::kFloat32), opt);
  auto res = kalm::search::exact_topk(q.to(torch::kBFloat16), c.to(torch::kBFloat16), opt);
  DOCTEST_CHECK(torch::equal(res.indices, ref.indices));
  auto res16 = kalm::search::exact_topk(q.to(torch::kHalf), c.to(torch::kHalf), opt);
  DOCTEST_CHECK(res16.indices.size(1) == 5);
}

DOCTEST_TEST_CASE("NaN scores rank last instead of corrupting the order") {
  auto c = torch::tensor({{1.0f}, {std::nanf("")}, {3.0f}, {2.0f}});
  auto q = torch::tensor({{1.0f}});
  kalm::search::TopKOptions opt;
  opt.k = 4;
  auto res = kalm::search::exact_topk(q, c, opt);
  DOCTEST_CHECK(row_of(res.indices, 0) == std::vector<std::int64_t>{2, 3, 0, 1});
}

DOCTEST_TEST_CASE("shape and dtype errors are usage errors") {
  kalm::search::TopKOptions opt;
  DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(torch::zeros({2, 3}), torch::zeros({4, 5}), opt), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(torch::zeros({3}), torch::zeros({4, 3}), opt), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(torch::zeros({2, 3}, torch::kInt64), torch::zeros({4, 3}), opt),
                          kalm::UsageError);
  opt.k = 0;
  DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(torch::zeros({2, 3}), torch::zeros({4, 3}), opt), kalm::UsageError);
}

DOCTEST_TEST_CASE("progress reports corpus rows done") {
  std::vector<std::int64_t> seen;
  kalm::search::TopKOptions opt;
  opt.k = 1;
  opt.corpus_block = 4;
  kalm::search::exact_topk(torch::ones({1, 2}), torch::ones({10, 2}), opt, [&](std::int64_t n) { seen.push_back(n); });
  DOCTEST_CHECK(seen == std::vector<std::int64_t>{4, 8, 10});
}
