#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "kalm/error.h"
#include "kalm/search/scan.h"
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

// --- the bf16 first pass with certified f32 rescoring -------------------------

namespace {
kalm::search::TopKResult search_with(const torch::Tensor& q, const torch::Tensor& c, std::int64_t k,
                                     kalm::search::SearchPrecision p, std::int64_t candidates = 0,
                                     std::int64_t corpus_block = 0, std::int64_t query_block = 0) {
  kalm::search::TopKOptions opt;
  opt.k = k;
  opt.precision = p;
  opt.candidates = candidates;
  opt.corpus_block = corpus_block;
  opt.query_block = query_block;
  return kalm::search::exact_topk(q, c, opt);
}
torch::Tensor unit_rows(torch::Tensor t) {
  return torch::nn::functional::normalize(t, torch::nn::functional::NormalizeFuncOptions().dim(1));
}
}  // namespace

namespace {
// A reduced-precision first pass on 60 x 3000 unit vectors of 64 dimensions:
// the f32 search's ids and scores, every certificate held, and lazy
// rescoring (fewer rows than the k + max(k, margin) candidates kept per query).
void check_first_pass_matches_f32(kalm::search::SearchPrecision precision, std::int64_t margin) {
  using kalm::search::SearchPrecision;
  torch::manual_seed(3);
  auto q = unit_rows(torch::randn({60, 64}));
  auto c = unit_rows(torch::randn({3000, 64}));
  for (std::int64_t k : {1, 10, 100}) {
    for (std::int64_t block : {257, 8192}) {
      DOCTEST_INFO(kalm::search::search_precision_name(precision) << " k " << k << " block " << block);
      auto exact = search_with(q, c, k, SearchPrecision::F32, 0, block, 7);
      auto fast = search_with(q, c, k, precision, 0, block, 7);
      DOCTEST_CHECK(torch::equal(fast.indices, exact.indices));
      DOCTEST_CHECK(torch::allclose(fast.scores, exact.scores, 0, 1e-6));
      DOCTEST_CHECK(fast.exact_fallbacks == 0);
      DOCTEST_CHECK(fast.rescored_rows >= 60 * k);
      DOCTEST_CHECK(fast.rescored_rows < 60 * (k + std::max<std::int64_t>(k, margin)));
      auto ref = brute_force(q, c, k);
      for (std::int64_t i = 0; i < 60; ++i) DOCTEST_CHECK(row_of(fast.indices, i) == ref[static_cast<std::size_t>(i)]);
    }
  }
}
}  // namespace

DOCTEST_TEST_CASE("bf16 first pass returns the f32 search's ids and scores, certified without fallback") {
  check_first_pass_matches_f32(kalm::search::SearchPrecision::BF16, 128);
}

DOCTEST_TEST_CASE("bf16 first pass: a failed certificate falls back to f32 and still returns the exact top-k") {
  using kalm::search::SearchPrecision;
  torch::manual_seed(4);
  // A dense neighbourhood: 500 rows within 1e-2 of one direction, their scores
  // against it within 2e-3 of each other (bf16 resolves 4e-3 near 1; float32
  // tells them apart), plus distant rows.
  auto centre = unit_rows(torch::randn({1, 32}));
  auto near = unit_rows(centre + 1e-2 * torch::randn({500, 32}));
  auto far = unit_rows(torch::randn({1500, 32}));
  auto c = torch::cat({far.slice(0, 0, 700), near, far.slice(0, 700)});
  auto q = torch::cat({centre, unit_rows(torch::randn({5, 32}))});
  auto exact = search_with(q, c, 10, SearchPrecision::F32);
  auto fast = search_with(q, c, 10, SearchPrecision::BF16, /*candidates=*/20);
  DOCTEST_CHECK(fast.exact_fallbacks >= 1);  // the centre query at least
  DOCTEST_CHECK(torch::equal(fast.indices, exact.indices));
  auto ref = brute_force(q, c, 10);
  for (std::int64_t i = 0; i < q.size(0); ++i) DOCTEST_CHECK(row_of(fast.indices, i) == ref[static_cast<std::size_t>(i)]);
  // With every row a candidate nothing needs certifying.
  auto all = search_with(q, c, 10, SearchPrecision::BF16, /*candidates=*/c.size(0));
  DOCTEST_CHECK(all.exact_fallbacks == 0);
  DOCTEST_CHECK(torch::equal(all.indices, exact.indices));
}

DOCTEST_TEST_CASE("bf16 first pass: ties, bf16 corpora, NaN and k above the corpus size") {
  using kalm::search::SearchPrecision;
  // Ties resolve by index, as in f32.
  auto c = torch::zeros({10, 2});
  for (int i : {2, 5, 7, 9}) c[i][0] = 1.0;
  for (int i : {1, 4}) c[i][0] = 0.5;
  auto q = torch::tensor({{1.0f, 0.0f}});
  DOCTEST_CHECK(row_of(search_with(q, c, 5, SearchPrecision::BF16, 5, 3).indices, 0) ==
                std::vector<std::int64_t>{2, 5, 7, 9, 1});
  // A bf16 corpus (as memory-mapped embeddings are) is rescored from its own values.
  torch::manual_seed(5);
  auto q2 = unit_rows(torch::randn({8, 48}));
  auto c2 = unit_rows(torch::randn({400, 48})).to(torch::kBFloat16);
  auto exact = search_with(q2, c2, 7, SearchPrecision::F32);
  auto fast = search_with(q2, c2, 7, SearchPrecision::BF16);
  DOCTEST_CHECK(torch::equal(fast.indices, exact.indices));
  DOCTEST_CHECK(torch::allclose(fast.scores, exact.scores, 0, 1e-6));
  // A NaN corpus row ranks last; a NaN query cannot be certified and is searched in f32.
  auto cn = torch::tensor({{1.0f}, {std::nanf("")}, {3.0f}, {2.0f}});
  DOCTEST_CHECK(row_of(search_with(torch::tensor({{1.0f}}), cn, 4, SearchPrecision::BF16, 2).indices, 0) ==
                std::vector<std::int64_t>{2, 3, 0, 1});
  auto nan_query = search_with(torch::tensor({{std::nanf("")}}), cn, 2, SearchPrecision::BF16, 2);
  DOCTEST_CHECK(nan_query.exact_fallbacks == 1);
  // k above N returns every row.
  auto every = search_with(q2, c2.slice(0, 0, 5), 10, SearchPrecision::BF16);
  DOCTEST_CHECK(every.indices.size(1) == 5);
  DOCTEST_CHECK(torch::equal(every.indices, search_with(q2, c2.slice(0, 0, 5), 10, SearchPrecision::F32).indices));
}

DOCTEST_TEST_CASE("search precision names") {
  using kalm::search::SearchPrecision;
  DOCTEST_CHECK(kalm::search::resolve_search_precision("f32", torch::kCPU) == SearchPrecision::F32);
  DOCTEST_CHECK(kalm::search::resolve_search_precision("bf16", torch::kCPU) == SearchPrecision::BF16);
  DOCTEST_CHECK(kalm::search::resolve_search_precision("auto", torch::Device("cuda:0")) == SearchPrecision::BF16);
  auto fastest = kalm::search::auto_search_precision(kalm::search::cpu_product_support());
  if (fastest == SearchPrecision::Int8 && !kalm::search::int8_products_exact()) fastest = SearchPrecision::F32;
  DOCTEST_CHECK(kalm::search::resolve_search_precision("auto", torch::kCPU) == fastest);
  DOCTEST_CHECK(std::string(kalm::search::search_precision_name(SearchPrecision::Int8)) == "int8");
  // auto's CPU rule, as measured: bf16 with AMX, or AVX512-BF16 on AMD; not
  // AVX512-BF16 alone on Intel, where int8 with AVX512-VNNI is the fast one.
  using kalm::search::CpuProductSupport;
  CpuProductSupport amx_xeon{false, true, true, true, true, true};
  CpuProductSupport zen4{true, true, false, true, false, false};
  CpuProductSupport xeon_without_amx{false, true, false, true, true, false};
  CpuProductSupport avx_vnni_only{false, false, false, false, true, false};
  CpuProductSupport old_cpu{};
  DOCTEST_CHECK(kalm::search::bf16_search_pays(amx_xeon));
  DOCTEST_CHECK(kalm::search::bf16_search_pays(zen4));
  DOCTEST_CHECK(!kalm::search::bf16_search_pays(xeon_without_amx));
  DOCTEST_CHECK(!kalm::search::bf16_search_pays(CpuProductSupport{true, false, false}));  // AMD before Zen 4
  DOCTEST_CHECK(!kalm::search::bf16_search_pays(old_cpu));
  DOCTEST_CHECK(kalm::search::auto_search_precision(amx_xeon) == SearchPrecision::BF16);
  DOCTEST_CHECK(kalm::search::auto_search_precision(zen4) == SearchPrecision::BF16);
  DOCTEST_CHECK(kalm::search::auto_search_precision(xeon_without_amx) == SearchPrecision::Int8);
  DOCTEST_CHECK(kalm::search::auto_search_precision(avx_vnni_only) == SearchPrecision::F32);  // runs, not measured
  DOCTEST_CHECK(kalm::search::auto_search_precision(old_cpu) == SearchPrecision::F32);
  DOCTEST_CHECK(kalm::search::int8_search_runs(avx_vnni_only));
  DOCTEST_CHECK(!kalm::search::int8_search_runs(old_cpu));
  try {
    kalm::search::resolve_search_precision("fp8", torch::kCPU);
    DOCTEST_FAIL("fp8 accepted");
  } catch (const kalm::UsageError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("--search-precision fp8") != std::string::npos);
  }
  // int8 is a CPU pass, and only where its products are exact.
  try {
    kalm::search::resolve_search_precision("int8", torch::Device("cuda:0"));
    DOCTEST_FAIL("int8 accepted for a GPU");
  } catch (const kalm::UsageError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("int8 runs on the CPU") != std::string::npos);
  }
  if (kalm::search::int8_search_runs(kalm::search::cpu_product_support())) {
    DOCTEST_CHECK(kalm::search::resolve_search_precision("int8", torch::kCPU) == SearchPrecision::Int8);
  } else {
    DOCTEST_CHECK_THROWS_AS(kalm::search::resolve_search_precision("int8", torch::kCPU), kalm::UsageError);
  }
  kalm::search::TopKOptions opt;
  opt.candidates = -1;
  DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(torch::zeros({2, 3}), torch::zeros({4, 3}), opt), kalm::UsageError);
}

// --- the int8 first pass ---------------------------------------------------------

namespace {
// The int8 pass runs only on CPUs with VNNI whose LibTorch multiplies int8
// exactly; elsewhere it is refused and auto does not pick it, which these
// tests then check instead.
bool int8_runs_here() {
  const bool vnni = kalm::search::int8_search_runs(kalm::search::cpu_product_support());
  if (vnni && kalm::search::int8_products_exact()) return true;
  kalm::search::TopKOptions opt;
  opt.precision = kalm::search::SearchPrecision::Int8;
  if (vnni) {
    DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(torch::zeros({2, 3}), torch::zeros({4, 3}), opt),
                            kalm::ModelError);
  } else {
    DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(torch::zeros({2, 3}), torch::zeros({4, 3}), opt),
                            kalm::UsageError);
  }
  DOCTEST_CHECK(kalm::search::resolve_search_precision("auto", torch::kCPU) != kalm::search::SearchPrecision::Int8);
  DOCTEST_MESSAGE((vnni ? "LibTorch's int8 products are not exact here" : "this CPU has no VNNI")
                  << ": the int8 pass is refused, as checked");
  return false;
}
}  // namespace

DOCTEST_TEST_CASE("LibTorch's int8 products, as the int8 pass multiplies, are exact at the extremes") {
  if (!int8_runs_here()) return;
  // Every product +-127 * +-127 and sums of up to 127^2 * D: a GEMM that adds
  // pairs of products in saturating 16-bit lanes (int8 without VNNI) gets
  // these wrong, and LibTorch 2.11 got D = 1 wrong in the layout the pass
  // first used.
  for (std::int64_t dim : {1, 2, 7, 64, 896, 4099}) {
    for (auto [rows, cols] : {std::pair<std::int64_t, std::int64_t>{33, 19}, {1, 5}, {6, 1}, {64, 64}}) {
      DOCTEST_INFO("D " << dim << " rows " << rows << " cols " << cols);
      auto a = torch::full({rows, dim}, 127, torch::kInt8);
      auto b = torch::full({cols, dim}, 127, torch::kInt8);
      a.slice(0, 1, rows, 2).fill_(-127);
      b.slice(1, 0, dim, 3).fill_(-127);
      auto out = torch::empty({rows, cols}, torch::kInt32);
      kalm::search::detail::int8_products(out, a, b);
      DOCTEST_CHECK(torch::equal(out.to(torch::kInt64), torch::matmul(a.to(torch::kInt64), b.to(torch::kInt64).t())));
      // Random values too.
      auto ra = torch::randint(-127, 128, {rows, dim}, torch::kInt8);
      auto rb = torch::randint(-127, 128, {cols, dim}, torch::kInt8);
      kalm::search::detail::int8_products(out, ra, rb);
      DOCTEST_CHECK(torch::equal(out.to(torch::kInt64), torch::matmul(ra.to(torch::kInt64), rb.to(torch::kInt64).t())));
    }
  }
}

DOCTEST_TEST_CASE("int8 first pass returns the f32 search's ids and scores, certified without fallback") {
  using kalm::search::SearchPrecision;
  if (!int8_runs_here()) return;
  check_first_pass_matches_f32(SearchPrecision::Int8, 256);
  torch::manual_seed(3);
  auto q = unit_rows(torch::randn({60, 64}));
  auto c = unit_rows(torch::randn({3000, 64}));
  // Unnormalised rows of very different lengths, and a bf16 corpus.
  auto scaled = c * torch::exp(2 * torch::randn({3000, 1}));
  auto q2 = q * 100;
  DOCTEST_CHECK(torch::equal(search_with(q2, scaled, 10, SearchPrecision::Int8).indices,
                             search_with(q2, scaled, 10, SearchPrecision::F32).indices));
  auto c16 = c.to(torch::kBFloat16);
  auto fast16 = search_with(q, c16, 10, SearchPrecision::Int8);
  DOCTEST_CHECK(torch::equal(fast16.indices, search_with(q, c16, 10, SearchPrecision::F32).indices));
  DOCTEST_CHECK(fast16.exact_fallbacks == 0);
}

DOCTEST_TEST_CASE("int8 first pass: certificates that cannot hold fall back, and every certified query is exact") {
  using kalm::search::SearchPrecision;
  if (!int8_runs_here()) return;
  // Rows that differ by less than int8 resolves: 400 rows within 1e-2 of one
  // direction (their scores against it within ~1e-4 of each other, int8's
  // bound here ~1e-2; float32 tells them apart), so the int8 order among them
  // is noise; with no margin of candidates the certificate must fail rather
  // than return int8's order.
  torch::manual_seed(4);
  auto centre = unit_rows(torch::randn({1, 32}));
  auto near = unit_rows(centre + 1e-2 * torch::randn({400, 32}));
  auto far = unit_rows(torch::randn({1600, 32}));
  auto c = torch::cat({far.slice(0, 0, 900), near, far.slice(0, 900)});
  auto q = torch::cat({centre, unit_rows(centre + 3e-2 * torch::randn({4, 32})), unit_rows(torch::randn({5, 32}))});
  auto exact = search_with(q, c, 10, SearchPrecision::F32);
  auto fast = search_with(q, c, 10, SearchPrecision::Int8, /*candidates=*/20);
  DOCTEST_CHECK(fast.exact_fallbacks >= 5);  // the queries inside the neighbourhood
  DOCTEST_CHECK(torch::equal(fast.indices, exact.indices));
  auto all = search_with(q, c, 10, SearchPrecision::Int8, /*candidates=*/c.size(0));
  DOCTEST_CHECK(all.exact_fallbacks == 0);
  DOCTEST_CHECK(torch::equal(all.indices, exact.indices));
  // Many small searches with few spare candidates: whatever was certified
  // must be the full sort's answer.
  std::int64_t fallbacks = 0, queries = 0;
  for (int seed = 0; seed < 20; ++seed) {
    torch::manual_seed(100 + seed);
    const std::int64_t dim = 3 + seed * 7;
    auto cs = torch::randn({500, dim}) * torch::rand({500, 1});
    auto qs = torch::randn({12, dim});
    for (std::int64_t k : {1, 5}) {
      auto res = search_with(qs, cs, k, SearchPrecision::Int8, /*candidates=*/k + 3, /*corpus_block=*/77, 5);
      auto ref = brute_force(qs, cs, k);
      for (std::int64_t i = 0; i < 12; ++i) DOCTEST_CHECK(row_of(res.indices, i) == ref[static_cast<std::size_t>(i)]);
      fallbacks += res.exact_fallbacks;
      queries += 12;
    }
  }
  DOCTEST_CHECK(fallbacks > 0);        // some certificates failed with 3 spare candidates...
  DOCTEST_CHECK(fallbacks < queries);  // ...and most held
}

DOCTEST_TEST_CASE("int8 first pass: ties, zeros, NaN and infinities, k above the corpus size, bad shapes") {
  using kalm::search::SearchPrecision;
  if (!int8_runs_here()) return;
  // Ties resolve by index, as in f32.
  auto c = torch::zeros({10, 2});
  for (int i : {2, 5, 7, 9}) c[i][0] = 1.0;
  for (int i : {1, 4}) c[i][0] = 0.5;
  auto q = torch::tensor({{1.0f, 0.0f}});
  DOCTEST_CHECK(row_of(search_with(q, c, 5, SearchPrecision::Int8, 5, 3).indices, 0) ==
                std::vector<std::int64_t>{2, 5, 7, 9, 1});
  // An all-zero query: every score 0, ties by index, as the f32 search gives.
  auto zero = search_with(torch::zeros({1, 2}), c, 3, SearchPrecision::Int8);
  DOCTEST_CHECK(row_of(zero.indices, 0) == std::vector<std::int64_t>{0, 1, 2});
  // A NaN query cannot be certified and is searched in f32.
  auto cn = torch::tensor({{1.0f}, {-2.0f}, {3.0f}, {2.0f}});
  auto nan_query = search_with(torch::tensor({{std::nanf("")}}), cn, 2, SearchPrecision::Int8, 2);
  DOCTEST_CHECK(nan_query.exact_fallbacks == 1);
  // A corpus with NaN or an infinity is searched in f32 (an infinite row's
  // score is infinite: it must come first, which int8 cannot see).
  torch::manual_seed(8);
  auto q2 = unit_rows(torch::randn({6, 16}));
  auto c2 = unit_rows(torch::randn({300, 16}));
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    auto cb = c2.clone();
    cb[123][4] = bad;
    auto fast = search_with(q2.abs(), cb, 5, SearchPrecision::Int8);
    DOCTEST_CHECK(fast.exact_fallbacks == 6);
    DOCTEST_CHECK(torch::equal(fast.indices, search_with(q2.abs(), cb, 5, SearchPrecision::F32).indices));
  }
  // k above N returns every row.
  auto every = search_with(q2, c2.slice(0, 0, 5), 10, SearchPrecision::Int8);
  DOCTEST_CHECK(every.indices.size(1) == 5);
  DOCTEST_CHECK(torch::equal(every.indices, search_with(q2, c2.slice(0, 0, 5), 10, SearchPrecision::F32).indices));
  // Too many dimensions for exact int32 sums, and the device selection, are refused.
  kalm::search::TopKOptions opt;
  opt.precision = SearchPrecision::Int8;
  DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(torch::zeros({1, 140000}), torch::zeros({2, 140000}), opt),
                          kalm::UsageError);
  opt.select_on_device = true;
  DOCTEST_CHECK_THROWS_AS(kalm::search::exact_topk(q2, c2, opt), kalm::UsageError);
}

// --- who multiplies: LibTorch's BLAS, BLIS, OpenBLAS ---------------------------

namespace {
// setup.sh installs BLIS and OpenBLAS, so one that cannot be loaded fails the
// test, unless KALM_TEST_BLAS_OPTIONAL is set (scripts/gpu-check.sh: the GPU
// machine has neither and builds without Debian's packages).
bool blas_available(kalm::search::F32Products p) {
  if (p == kalm::search::F32Products::Torch) return true;
  try {
    kalm::search::resolve_f32_products(p);
    return true;
  } catch (const kalm::ModelError& e) {
    if (!std::getenv("KALM_TEST_BLAS_OPTIONAL")) DOCTEST_FAIL(std::string(e.what()));
    DOCTEST_MESSAGE("skipped (KALM_TEST_BLAS_OPTIONAL): " << std::string(e.what()));
    return false;
  }
}
}  // namespace

DOCTEST_TEST_CASE("f32 products from LibTorch, BLIS and OpenBLAS give the full sort's ids") {
  using kalm::search::F32Products;
  torch::manual_seed(6);
  auto q = torch::randn({41, 24});
  auto c = torch::randn({1203, 24});
  for (std::int64_t k : {1, 10, 60}) {
    auto ref = brute_force(q, c, k);
    auto expected_scores = [&](const torch::Tensor& idx) { return torch::matmul(q, c.t()).gather(1, idx); };
    for (F32Products p : {F32Products::Torch, F32Products::Blis, F32Products::OpenBlas}) {
      if (!blas_available(p)) continue;
      for (std::int64_t block : {97, 8192}) {
        DOCTEST_INFO(kalm::search::f32_products_name(p) << " k " << k << " block " << block);
        kalm::search::TopKOptions opt;
        opt.k = k;
        opt.corpus_block = block;
        opt.query_block = 16;
        opt.f32_products = p;
        auto res = kalm::search::exact_topk(q, c, opt);
        DOCTEST_CHECK(res.f32_products == p);
        for (std::int64_t i = 0; i < 41; ++i) DOCTEST_CHECK(row_of(res.indices, i) == ref[static_cast<std::size_t>(i)]);
        DOCTEST_CHECK(torch::allclose(res.scores, expected_scores(res.indices), 1e-5, 1e-5));
        // The bf16 pass's float32 fallback multiplies with the same library.
        opt.precision = kalm::search::SearchPrecision::BF16;
        opt.candidates = k;  // no margin: most certificates fail and are searched again in f32
        auto fast = kalm::search::exact_topk(q, c, opt);
        DOCTEST_CHECK(fast.exact_fallbacks > 0);
        DOCTEST_CHECK(fast.f32_products == p);
        for (std::int64_t i = 0; i < 41; ++i)
          DOCTEST_CHECK(row_of(fast.indices, i) == ref[static_cast<std::size_t>(i)]);
      }
    }
  }
}

DOCTEST_TEST_CASE("the products library: names, KALM_SEARCH_BLAS and the automatic choice") {
  using kalm::search::F32Products;
  DOCTEST_CHECK(kalm::search::parse_f32_products("blis", "--x") == F32Products::Blis);
  DOCTEST_CHECK(kalm::search::parse_f32_products("openblas", "--x") == F32Products::OpenBlas);
  DOCTEST_CHECK(kalm::search::parse_f32_products("torch", "--x") == F32Products::Torch);
  DOCTEST_CHECK(std::string(kalm::search::f32_products_name(F32Products::Blis)) == "blis");
  try {
    kalm::search::parse_f32_products("mkl", "--x");
    DOCTEST_FAIL("mkl accepted");
  } catch (const kalm::UsageError& e) {
    DOCTEST_CHECK(std::string(e.what()) == "--x mkl: expected auto, torch, blis or openblas");
  }
  ::unsetenv("KALM_SEARCH_BLAS");
  // Auto: BLIS on AMD CPUs (setup.sh installs it; OpenBLAS, then LibTorch's
  // BLAS where it is missing), LibTorch's BLAS on others.
  const bool blis = blas_available(F32Products::Blis), openblas = blas_available(F32Products::OpenBlas);
  DOCTEST_CHECK(kalm::search::resolve_f32_products(F32Products::Auto) ==
                (!kalm::search::cpu_is_amd() ? F32Products::Torch
                 : blis                      ? F32Products::Blis
                 : openblas                  ? F32Products::OpenBlas
                                             : F32Products::Torch));
  if (!openblas) return;
  // An explicit choice is kept.
  DOCTEST_CHECK(kalm::search::resolve_f32_products(F32Products::OpenBlas) == F32Products::OpenBlas);
  // KALM_SEARCH_BLAS decides what Auto means, and only Auto.
  ::setenv("KALM_SEARCH_BLAS", "openblas", 1);
  DOCTEST_CHECK(kalm::search::resolve_f32_products(F32Products::Auto) == F32Products::OpenBlas);
  DOCTEST_CHECK(kalm::search::resolve_f32_products(F32Products::Torch) == F32Products::Torch);
  kalm::search::TopKOptions opt;
  opt.k = 2;
  auto res = kalm::search::exact_topk(torch::eye(3), torch::eye(3), opt);
  DOCTEST_CHECK(res.f32_products == F32Products::OpenBlas);
  DOCTEST_CHECK(row_of(res.indices, 1) == std::vector<std::int64_t>{1, 0});
  ::setenv("KALM_SEARCH_BLAS", "cublas", 1);
  try {
    kalm::search::exact_topk(torch::eye(3), torch::eye(3), opt);
    DOCTEST_FAIL("KALM_SEARCH_BLAS=cublas accepted");
  } catch (const kalm::UsageError& e) {
    DOCTEST_CHECK(std::string(e.what()) == "KALM_SEARCH_BLAS=cublas: expected auto, torch, blis or openblas");
  }
  ::unsetenv("KALM_SEARCH_BLAS");
}

DOCTEST_TEST_CASE("zero-dimensional vectors score 0 with every library") {
  using kalm::search::F32Products;
  for (F32Products p : {F32Products::Torch, F32Products::Blis, F32Products::OpenBlas}) {
    if (!blas_available(p)) continue;
    kalm::search::TopKOptions opt;
    opt.k = 2;
    opt.f32_products = p;
    auto res = kalm::search::exact_topk(torch::zeros({3, 0}), torch::zeros({4, 0}), opt);
    DOCTEST_CHECK(torch::equal(res.scores, torch::zeros({3, 2})));
    DOCTEST_CHECK(row_of(res.indices, 2) == std::vector<std::int64_t>{0, 1});
  }
}

DOCTEST_TEST_CASE("the GPU's selection on the device (run here on the CPU) gives the host selection's results") {
  using kalm::search::SearchPrecision;
  auto both = [](const torch::Tensor& q, const torch::Tensor& c, kalm::search::TopKOptions opt) {
    opt.select_on_device = false;
    auto host = kalm::search::exact_topk(q, c, opt);
    opt.select_on_device = true;
    auto device = kalm::search::exact_topk(q, c, opt);
    DOCTEST_CHECK(torch::equal(host.indices, device.indices));
    DOCTEST_CHECK(torch::equal(host.scores, device.scores));
    DOCTEST_CHECK(host.exact_fallbacks == device.exact_fallbacks);
    // Candidates bounded to one query block at a time: the corpus passes once
    // per block of queries, with the same results, and progress counts each
    // pass as its share of the search.
    opt.device_candidate_bytes = 1;
    std::vector<std::int64_t> done;
    auto grouped = kalm::search::exact_topk(q, c, opt, [&](std::int64_t rows) { done.push_back(rows); });
    DOCTEST_CHECK(torch::equal(host.indices, grouped.indices));
    DOCTEST_CHECK(torch::equal(host.scores, grouped.scores));
    DOCTEST_CHECK(host.exact_fallbacks == grouped.exact_fallbacks);
    if (opt.query_block > 0 && opt.corpus_block > 0) {  // blocks the test chose (else the defaults)
      const std::int64_t groups = (q.size(0) + opt.query_block - 1) / opt.query_block;
      const std::int64_t blocks = (c.size(0) + opt.corpus_block - 1) / opt.corpus_block;
      DOCTEST_REQUIRE(static_cast<std::int64_t>(done.size()) >= groups * blocks);  // f32 fallbacks may add passes
      DOCTEST_CHECK(std::is_sorted(done.begin(), done.begin() + groups * blocks));
      DOCTEST_CHECK(done[static_cast<std::size_t>(groups * blocks - 1)] == c.size(0));
    }
    return device;
  };
  torch::manual_seed(12);
  auto q = unit_rows(torch::randn({23, 32}));
  auto c = unit_rows(torch::randn({700, 32}));
  for (auto precision : {SearchPrecision::F32, SearchPrecision::BF16}) {
    for (std::int64_t k : {1, 10, 150}) {
      for (std::int64_t block : {64, 1000}) {
        DOCTEST_INFO("k " << k << " block " << block);
        kalm::search::TopKOptions opt;
        opt.k = k;
        opt.precision = precision;
        opt.corpus_block = block;
        opt.query_block = 8;
        auto res = both(q, c, opt);
        auto ref = brute_force(q, c, k);
        for (std::int64_t i = 0; i < 23; ++i) DOCTEST_CHECK(row_of(res.indices, i) == ref[static_cast<std::size_t>(i)]);
      }
    }
  }
  // Duplicated corpus rows (every score tied with another) across blocks, and NaN.
  auto dup = torch::cat({c.slice(0, 0, 50), c.slice(0, 0, 50), c.slice(0, 0, 50)});
  dup[7][0] = std::nanf("");
  kalm::search::TopKOptions opt;
  opt.k = 9;
  opt.corpus_block = 40;
  auto res = both(q, dup, opt);
  // Row r and its copies r+50, r+100 tie: the lowest index is kept first.
  for (std::int64_t i = 0; i < 23; ++i) {
    auto ids = row_of(res.indices, i);
    for (std::size_t j = 0; j + 1 < ids.size(); ++j)
      if (ids[j] % 50 == ids[j + 1] % 50) DOCTEST_CHECK(ids[j] < ids[j + 1]);
  }
  opt.precision = SearchPrecision::BF16;
  opt.candidates = 12;
  both(q, dup, opt);
}

DOCTEST_TEST_CASE("CublasProductsGuard: exact cuBLAS products on CUDA while alive, the settings restored after") {
  // The settings are process-wide flags: toggling them needs no GPU.
  auto& context = at::globalContext();
  const torch::Device cuda(torch::kCUDA, 0), cpu(torch::kCPU);
  const bool tf32_before = context.allowTF32CuBLAS();
  context.setAllowTF32CuBLAS(true);
  context.setAllowBF16ReductionCuBLAS(true);
  auto bf16_reduction_allowed = [&] {
    // Older LibTorch: a bool (true = allowed); newer: an enum whose 0 is "allowed".
    const auto value = context.allowBF16ReductionCuBLAS();
    return static_cast<int>(value) == (std::is_same_v<std::decay_t<decltype(value)>, bool> ? 1 : 0);
  };
  DOCTEST_REQUIRE(bf16_reduction_allowed());
  {
    kalm::search::CublasProductsGuard f32(cuda, torch::kFloat32);
    DOCTEST_CHECK_FALSE(context.allowTF32CuBLAS());
    DOCTEST_CHECK(bf16_reduction_allowed());  // float32 products leave bf16's setting alone
  }
  DOCTEST_CHECK(context.allowTF32CuBLAS());
  {
    kalm::search::CublasProductsGuard bf16(cuda, torch::kBFloat16);
    DOCTEST_CHECK_FALSE(bf16_reduction_allowed());
    DOCTEST_CHECK(context.allowTF32CuBLAS());
  }
  DOCTEST_CHECK(bf16_reduction_allowed());
  {
    kalm::search::CublasProductsGuard on_cpu(cpu, torch::kBFloat16);  // the CPU's products: nothing to change
    DOCTEST_CHECK(bf16_reduction_allowed());
    kalm::search::CublasProductsGuard on_cpu32(cpu, torch::kFloat32);
    DOCTEST_CHECK(context.allowTF32CuBLAS());
  }
  context.setAllowTF32CuBLAS(tf32_before);
}
