// The search's score scan (kalm/search/scan.h): every kernel this CPU runs
// against the portable one, on rows with NaN, infinities, ties with the floor
// and partial trailing groups.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <algorithm>
#include <random>
#include <vector>

#include "kalm/search/scan.h"

namespace {
using kalm::search::detail::kScanGroup;

// The reference: the first whole group from `from` with a value above `floor`.
std::int64_t reference(const std::vector<float>& row, std::int64_t from, float floor) {
  const auto width = static_cast<std::int64_t>(row.size());
  std::int64_t j = from;
  for (; j + kScanGroup <= width; j += kScanGroup)
    for (std::int64_t t = 0; t < kScanGroup; ++t)
      if (row[static_cast<std::size_t>(j + t)] > floor) return j;
  return j;
}

std::uint16_t bf16_bits(float v) {  // truncation: the test wants exact bf16 values
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return static_cast<std::uint16_t>(bits >> 16);
}
float from_bf16_bits(std::uint16_t b) {
  std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
}  // namespace

DOCTEST_TEST_CASE("every scan kernel finds the group the reference finds") {
  const auto kernels = kalm::search::detail::runnable_scan_kernels();
  DOCTEST_REQUIRE(!kernels.empty());
  DOCTEST_CHECK(std::string(kernels.back().name) == "portable");
  DOCTEST_CHECK(std::string(kalm::search::detail::scan_kernel().name) == kernels.front().name);
#if defined(__x86_64__)
  DOCTEST_CHECK(kernels.size() >= 3);  // sse2 and portable at least, x86-64's baseline
#endif
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  int cases = 0, hits = 0;
  for (std::int64_t width : {0, 1, 15, 16, 17, 31, 32, 33, 64, 100, 257}) {
    for (int trial = 0; trial < 40; ++trial) {
      std::vector<float> row(static_cast<std::size_t>(width));
      for (auto& v : row) v = from_bf16_bits(bf16_bits(normal(rng) - 2.5f));  // mostly below the floors
      // Specials: NaN (above nothing), -inf, and a value equal to the floor (not above it).
      if (width > 3) {
        row[rng() % row.size()] = nan;
        row[rng() % row.size()] = -inf;
        row[rng() % row.size()] = 0.5f;
      }
      if (width > 0 && trial % 4 == 0) row[rng() % row.size()] = 1.5f;  // one clear hit
      if (width > 0 && trial % 9 == 0) row[rng() % row.size()] = inf;
      // int8-pass scores: int32 products read through per-column scales
      // (some large enough that float rounding decides, some zero).
      std::vector<std::int32_t> ints(row.size());
      std::vector<float> scales(row.size()), scaled(row.size());
      for (std::size_t i = 0; i < row.size(); ++i) {
        ints[i] = static_cast<std::int32_t>(rng() % 40000001) - 20000000;
        // Mostly below the floors (|v| < 0.3); a few columns of larger scale reach them.
        const int exponent = rng() % 23 == 0 ? -24 : -36;
        scales[i] = i % 5 == 0 ? 0.0f : std::ldexp(static_cast<float>(rng() % 1000 + 1), exponent);
        scaled[i] = static_cast<float>(ints[i]) * scales[i];
      }
      std::vector<std::uint16_t> bits(row.size());
      for (std::size_t i = 0; i < row.size(); ++i) bits[i] = bf16_bits(row[i]);
      for (float floor : {0.5f, 1.0f, -inf, inf}) {
        for (std::int64_t from : {std::int64_t{0}, std::int64_t{3}, width / 2}) {
          if (from > width) continue;
          const std::int64_t want = reference(row, from, floor);
          const std::int64_t want_i32 = reference(scaled, from, floor);
          hits += want + kScanGroup <= width;
          ++cases;
          for (const auto& k : kernels) {
            DOCTEST_INFO("kernel " << k.name << " width " << width << " from " << from << " floor " << floor);
            DOCTEST_CHECK(k.f32(row.data(), from, width, floor) == want);
            DOCTEST_CHECK(k.bf16(bits.data(), from, width, floor) == want);
            DOCTEST_CHECK(k.i32_scaled(ints.data(), scales.data(), from, width, floor) == want_i32);
          }
        }
      }
    }
  }
  // The rows exercise both outcomes: groups found and scans run to the end.
  DOCTEST_CHECK(hits > 100);
  DOCTEST_CHECK(cases - hits > 100);
}

namespace {
// Reference for block_top: each row's c best columns by (score desc, NaN as
// -inf, -0 == +0; column asc), in increasing column order.
std::vector<std::vector<std::int64_t>> reference_top(const torch::Tensor& scores, std::int64_t c) {
  auto s = scores.to(torch::kFloat32).contiguous();
  const std::int64_t rows = s.size(0), width = s.size(1);
  std::vector<std::vector<std::int64_t>> out;
  for (std::int64_t i = 0; i < rows; ++i) {
    const float* row = s.data_ptr<float>() + i * width;
    auto value = [&](std::int64_t j) {
      return std::isnan(row[j]) ? -std::numeric_limits<float>::infinity() : row[j];
    };
    std::vector<std::int64_t> cols(static_cast<std::size_t>(width));
    for (std::int64_t j = 0; j < width; ++j) cols[static_cast<std::size_t>(j)] = j;
    std::stable_sort(cols.begin(), cols.end(), [&](std::int64_t a, std::int64_t b) { return value(a) > value(b); });
    cols.resize(static_cast<std::size_t>(std::min(c, width)));
    std::sort(cols.begin(), cols.end());
    out.push_back(cols);
  }
  return out;
}
}  // namespace

// A row of block_top's columns, sorted (block_top leaves them in no order).
static std::vector<std::int64_t> sorted_row(const torch::Tensor& columns, std::int64_t i) {
  auto r = columns[i].contiguous();
  std::vector<std::int64_t> v(r.data_ptr<std::int64_t>(), r.data_ptr<std::int64_t>() + r.numel());
  std::sort(v.begin(), v.end());
  return v;
}

DOCTEST_TEST_CASE("block_top: each row's best columns, ties by column, NaN last") {
  using kalm::search::detail::block_top;
  torch::manual_seed(11);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // Distinct scores: torch::topk alone decides, no row needs keys.
  {
    auto s = torch::randn({9, 50});
    auto top = block_top(s, 7);
    DOCTEST_CHECK(top.tied_rows == 0);
    auto ref = reference_top(s, 7);
    for (std::int64_t i = 0; i < 9; ++i) {
      DOCTEST_CHECK(sorted_row(top.columns, i) == ref[static_cast<std::size_t>(i)]);
      DOCTEST_CHECK(torch::equal(top.scores[i], s[i].index_select(0, top.columns[i])));
    }
  }
  // Scores on a coarse grid (many ties at the c-th), NaN, +-inf, -0 and +0.
  for (int trial = 0; trial < 30; ++trial) {
    auto s = torch::randint(-3, 4, {6, 40}).to(torch::kFloat32) * 0.5f;
    auto a = s.accessor<float, 2>();
    a[0][3] = nan;
    a[1][5] = inf;
    a[2][7] = -inf;
    for (int j = 0; j < 40; j += 3) a[3][j] = (j % 2) ? -0.0f : 0.0f;
    for (int j = 0; j < 40; ++j) a[4][j] = nan;  // a row of NaN only: its first c columns
    for (std::int64_t c : {1, 5, 17, 40, 60}) {
      for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
        auto input = s.to(dtype);
        auto top = block_top(input, c);
        auto ref = reference_top(input, c);
        const std::int64_t n = std::min<std::int64_t>(c, 40);
        DOCTEST_REQUIRE((top.columns.sizes() == torch::IntArrayRef({6, n})));
        DOCTEST_CHECK((top.scores.scalar_type() == torch::kFloat32));
        if (c < 40 && trial == 0) DOCTEST_CHECK(top.tied_rows > 0);
        for (std::int64_t i = 0; i < 6; ++i) {
          DOCTEST_INFO("trial " << trial << " c " << c << " row " << i);
          DOCTEST_CHECK(sorted_row(top.columns, i) == ref[static_cast<std::size_t>(i)]);
          // Scores are the inputs at those columns, NaN as -inf.
          auto want = torch::nan_to_num(input[i].to(torch::kFloat32), -inf, inf, -inf).index_select(0, top.columns[i]);
          DOCTEST_CHECK(torch::equal(top.scores[i], want));
        }
      }
    }
  }
  // Empty blocks.
  DOCTEST_CHECK((block_top(torch::zeros({0, 5}), 3).columns.sizes() == torch::IntArrayRef({0, 3})));
  DOCTEST_CHECK((block_top(torch::zeros({2, 0}), 3).columns.sizes() == torch::IntArrayRef({2, 0})));
}

DOCTEST_TEST_CASE("order_keys and merge_top: the search's order, exactly, whatever the ties") {
  using kalm::search::detail::merge_top;
  using kalm::search::detail::order_keys;
  const float inf = std::numeric_limits<float>::infinity();
  // Keys order by score, then lower index; -0 equals +0; -inf lowest.
  auto scores = torch::tensor({1.5f, -0.0f, 0.0f, -2.0f, -inf, inf, 1.5f, -1e-30f});
  auto index = torch::tensor({4, 1, 0, 2, 3, 9, 7, 5}, torch::kInt64);
  auto keys = order_keys(scores, index);
  auto order = std::get<1>(keys.sort(0, /*descending=*/true));
  auto ranked = index.index_select(0, order).contiguous();
  DOCTEST_CHECK(std::vector<std::int64_t>(ranked.data_ptr<std::int64_t>(), ranked.data_ptr<std::int64_t>() + 8) ==
                std::vector<std::int64_t>{9, 4, 7, 0, 1, 5, 2, 3});
  // Merging two lists keeps the c best of both by that order.
  auto a_s = torch::tensor({{3.0f, 1.0f, 1.0f}}), a_i = torch::tensor({{10, 12, 11}}, torch::kInt64);
  auto b_s = torch::tensor({{1.0f, 2.0f}}), b_i = torch::tensor({{3, 40}}, torch::kInt64);
  auto [m_s, m_i] = merge_top(a_s, a_i, b_s, b_i, 3);
  DOCTEST_CHECK(sorted_row(m_i, 0) == std::vector<std::int64_t>{3, 10, 40});  // of the three 1.0s, row 3
  DOCTEST_CHECK(m_s.sum().item<float>() == 6.0f);
  auto [all_s, all_i] = merge_top(a_s, a_i, b_s, b_i, 9);  // c beyond both: everything
  DOCTEST_CHECK(all_i.size(1) == 5);
}
