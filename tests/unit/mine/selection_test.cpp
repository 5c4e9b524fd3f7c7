// Hand-built retrieved lists pin every selection rule of kalm/mine/selection.h.
#include <doctest/doctest.h>

#include <numeric>

#include "kalm/error.h"
#include "kalm/mine/selection.h"

using kalm::mine::Hit;
using kalm::mine::RankBasis;
using kalm::mine::Sampling;
using kalm::mine::Selection;
using kalm::mine::SelectionRules;
using kalm::mine::Shortfall;

namespace {

// n hits with strictly decreasing scores 1.0, 0.99, ...; hit r is pool row r.
std::vector<Hit> descending(std::int64_t n) {
  std::vector<Hit> hits;
  for (std::int64_t r = 0; r < n; ++r) hits.push_back({r, 1.0f - 0.01f * static_cast<float>(r)});
  return hits;
}

std::vector<std::int64_t> identity_keys(std::int64_t n) {
  std::vector<std::int64_t> keys(static_cast<std::size_t>(n));
  std::iota(keys.begin(), keys.end(), 0);
  return keys;
}

SelectionRules top_rules(std::int64_t begin, std::int64_t end, std::int64_t m) {
  SelectionRules r;
  r.range_begin = begin;
  r.range_end = end;
  r.negatives = m;
  r.sampling = Sampling::kTop;
  return r;
}

}  // namespace

DOCTEST_TEST_CASE("ranking_consistency: the item at 0-based index k decides, ties keep") {
  auto hits = descending(60);  // score at index 50 is 0.5
  const double at50 = hits[50].score;
  DOCTEST_SUBCASE("positive exactly at index k (tie): kept") {
    auto c = kalm::mine::ranking_consistency(hits, at50, 50);
    DOCTEST_CHECK(c.keep);
    DOCTEST_CHECK(c.positive_rank == 51);
  }
  DOCTEST_SUBCASE("positive just below the item at index k: dropped, rank 52") {
    auto c = kalm::mine::ranking_consistency(hits, static_cast<double>(hits[51].score), 50);
    DOCTEST_CHECK_FALSE(c.keep);
    DOCTEST_CHECK(c.positive_rank == 52);
  }
  DOCTEST_SUBCASE("positive at the top") {
    auto c = kalm::mine::ranking_consistency(hits, 1.0, 50);
    DOCTEST_CHECK(c.keep);
    DOCTEST_CHECK(c.positive_rank == 1);
  }
  DOCTEST_SUBCASE("below everything: rank = size + 1") {
    auto c = kalm::mine::ranking_consistency(hits, -5.0, 50);
    DOCTEST_CHECK_FALSE(c.keep);
    DOCTEST_CHECK(c.positive_rank == 61);
  }
}

DOCTEST_TEST_CASE("ranking_consistency applies only when more than k results exist") {
  auto hits = descending(51);  // exactly k+1 results: applies
  DOCTEST_CHECK_FALSE(kalm::mine::ranking_consistency(hits, -1.0, 50).keep);
  hits.pop_back();  // exactly k results: never drops
  DOCTEST_CHECK(kalm::mine::ranking_consistency(hits, -1.0, 50).keep);
  DOCTEST_CHECK(kalm::mine::ranking_consistency({}, -1.0, 0).keep);
  DOCTEST_CHECK_THROWS_AS(kalm::mine::ranking_consistency(hits, 0.0, -1), kalm::UsageError);
}

DOCTEST_TEST_CASE("ranking_consistency with k = 0: the positive must tie or beat the top hit") {
  std::vector<Hit> hits = {{3, 0.9f}, {1, 0.9f}, {2, 0.5f}};
  DOCTEST_CHECK(kalm::mine::ranking_consistency(hits, 0.9f, 0).keep);
  DOCTEST_CHECK_FALSE(kalm::mine::ranking_consistency(hits, 0.89, 0).keep);
  DOCTEST_CHECK(kalm::mine::rank_of_score(hits, 0.5f) == 3);  // two hits strictly above
}

DOCTEST_TEST_CASE("window boundaries: [A, B) 0-based over the retrieved list") {
  auto hits = descending(10);
  auto keys = identity_keys(10);
  std::mt19937_64 rng(1);
  auto rules = top_rules(2, 5, 3);
  auto sel = kalm::mine::select_negatives(hits, keys, {}, std::nullopt, 3, rules, rng);
  DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{2, 3, 4});
  DOCTEST_CHECK(sel.padded.empty());
  DOCTEST_CHECK(sel.eligible == 3);
  // The default window 50-100 on a 120-long list: rows 50..99 only.
  auto long_hits = descending(120);
  auto long_keys = identity_keys(120);
  SelectionRules def;
  def.sampling = Sampling::kTop;
  sel = kalm::mine::select_negatives(long_hits, long_keys, {}, std::nullopt, 50, def, rng);
  DOCTEST_REQUIRE(sel.mined.size() == 50);
  DOCTEST_CHECK(sel.mined.front() == 50);
  DOCTEST_CHECK(sel.mined.back() == 99);
}

DOCTEST_TEST_CASE("exclusion: excluded keys never chosen; rank basis retrieved vs eligible") {
  auto hits = descending(10);
  auto keys = identity_keys(10);
  keys[7] = 3;  // row 7 holds the same text as row 3
  std::mt19937_64 rng(1);
  std::unordered_set<std::int64_t> excluded = {0, 3};  // e.g. the positive is row 0, the query's text is row 3
  auto rules = top_rules(2, 5, 3);
  DOCTEST_SUBCASE("retrieved basis: the window stays at ranks 2..4, excluded ones leave a hole") {
    auto sel = kalm::mine::select_negatives(hits, keys, excluded, std::nullopt, 2, rules, rng);
    DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{2, 4});
    DOCTEST_CHECK(sel.eligible == 2);
  }
  DOCTEST_SUBCASE("eligible basis: ranks counted after exclusions (rows 1,2,4,5,6,8 -> ranks 2..4 = 4,5,6)") {
    rules.rank_basis = RankBasis::kEligible;
    auto sel = kalm::mine::select_negatives(hits, keys, excluded, std::nullopt, 3, rules, rng);
    DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{4, 5, 6});
  }
  DOCTEST_SUBCASE("a duplicate text in the pool is offered once") {
    std::vector<std::int64_t> dup_keys = {0, 1, 2, 2, 4, 5, 6, 7, 8, 9};
    auto sel = kalm::mine::select_negatives(hits, dup_keys, {}, std::nullopt, 3, top_rules(2, 6, 3), rng);
    DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{2, 4, 5});
  }
}

DOCTEST_TEST_CASE("positive-aware rules use the anchor (best positive score)") {
  auto hits = descending(10);  // scores 1.0 .. 0.91
  auto keys = identity_keys(10);
  std::mt19937_64 rng(1);
  auto rules = top_rules(0, 10, 3);
  DOCTEST_SUBCASE("max-score-ratio: drop score > r * anchor") {
    rules.max_score_ratio = 0.955;  // anchor 1.0: rows 0..4 (1.0 .. 0.96) score above 0.955
    auto sel = kalm::mine::select_negatives(hits, keys, {}, 1.0, 3, rules, rng);
    DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{5, 6, 7});
    rules.max_score_ratio = 0.5;  // anchor 1.9: threshold 0.95 -> row 5 (0.95f, just below 0.95) stays
    sel = kalm::mine::select_negatives(hits, keys, {}, 1.9, 3, rules, rng);
    DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{5, 6, 7});
    rules.max_score_ratio = 0.4;  // anchor 2.5: threshold 1.0 -> nothing is above it
    sel = kalm::mine::select_negatives(hits, keys, {}, 2.5, 3, rules, rng);
    DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{0, 1, 2});
  }
  DOCTEST_SUBCASE("margin: drop score > anchor - m") {
    rules.margin = 0.025;  // anchor 0.98: drop > 0.955 -> rows 0..4 dropped
    auto sel = kalm::mine::select_negatives(hits, keys, {}, 0.98, 3, rules, rng);
    DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{5, 6, 7});
  }
  DOCTEST_SUBCASE("no anchor with a positive-aware rule is a usage error") {
    rules.margin = 0.1;
    DOCTEST_CHECK_THROWS_AS(kalm::mine::select_negatives(hits, keys, {}, std::nullopt, 3, rules, rng),
                            kalm::UsageError);
  }
}

DOCTEST_TEST_CASE("random sampling: without replacement, rank order, seeded") {
  auto hits = descending(100);
  auto keys = identity_keys(100);
  SelectionRules rules;
  rules.range_begin = 50;
  rules.range_end = 100;
  std::mt19937_64 a(7), b(7), c(8);
  auto s1 = kalm::mine::select_negatives(hits, keys, {}, std::nullopt, 7, rules, a);
  auto s2 = kalm::mine::select_negatives(hits, keys, {}, std::nullopt, 7, rules, b);
  auto s3 = kalm::mine::select_negatives(hits, keys, {}, std::nullopt, 7, rules, c);
  DOCTEST_CHECK(s1.mined == s2.mined);
  DOCTEST_CHECK(s1.mined != s3.mined);
  DOCTEST_REQUIRE(s1.mined.size() == 7);
  for (std::size_t i = 0; i < s1.mined.size(); ++i) {
    DOCTEST_CHECK(s1.mined[i] >= 50);
    DOCTEST_CHECK(s1.mined[i] < 100);
    if (i) DOCTEST_CHECK(s1.mined[i - 1] < s1.mined[i]);
  }
  // need 0 (the group already has M negatives): nothing mined, the RNG untouched.
  std::mt19937_64 d(7);
  auto s0 = kalm::mine::select_negatives(hits, keys, {}, std::nullopt, 0, rules, d);
  DOCTEST_CHECK(s0.mined.empty());
  DOCTEST_CHECK(d() == std::mt19937_64(7)());
}

DOCTEST_TEST_CASE("ties in the retrieved list follow the list's order (index ascending)") {
  std::vector<Hit> hits = {{4, 0.5f}, {1, 0.5f}, {2, 0.5f}};
  auto sorted = hits;
  std::sort(sorted.begin(), sorted.end(), [](const Hit& x, const Hit& y) {
    return x.score != y.score ? x.score > y.score : x.index < y.index;
  });
  std::mt19937_64 rng(1);
  auto sel = kalm::mine::select_negatives(sorted, identity_keys(5), {}, std::nullopt, 2, top_rules(0, 3, 2), rng);
  DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{1, 2});
}

DOCTEST_TEST_CASE("shortfall: pad with random pool rows, or drop") {
  auto hits = descending(6);
  auto keys = identity_keys(20);  // the pool is larger than the retrieved list
  std::unordered_set<std::int64_t> excluded = {0};
  auto rules = top_rules(4, 10, 4);  // window offers rows 4, 5 only
  DOCTEST_SUBCASE("pad") {
    std::mt19937_64 rng(3);
    auto sel = kalm::mine::select_negatives(hits, keys, excluded, std::nullopt, 4, rules, rng);
    DOCTEST_CHECK(sel.mined == std::vector<std::int64_t>{4, 5});
    DOCTEST_REQUIRE(sel.padded.size() == 2);
    DOCTEST_CHECK_FALSE(sel.short_dropped);
    for (auto p : sel.padded) {
      DOCTEST_CHECK(p != 0);
      DOCTEST_CHECK(p != 4);
      DOCTEST_CHECK(p != 5);
    }
    DOCTEST_CHECK(sel.padded[0] != sel.padded[1]);
  }
  DOCTEST_SUBCASE("drop") {
    rules.shortfall = Shortfall::kDrop;
    std::mt19937_64 rng(3);
    auto sel = kalm::mine::select_negatives(hits, keys, excluded, std::nullopt, 4, rules, rng);
    DOCTEST_CHECK(sel.short_dropped);
    DOCTEST_CHECK(sel.mined.empty());
    DOCTEST_CHECK(sel.eligible == 2);
  }
  DOCTEST_SUBCASE("pad, but the pool is exhausted: dropped") {
    std::mt19937_64 rng(3);
    auto small = identity_keys(6);  // rows 1..5 usable, 1..3 outside the window
    auto sel = kalm::mine::select_negatives(hits, small, {0, 1, 2}, std::nullopt, 4, rules, rng);
    DOCTEST_CHECK(sel.short_dropped);
    sel = kalm::mine::select_negatives(hits, small, {0, 1}, std::nullopt, 4, rules, rng);
    DOCTEST_CHECK_FALSE(sel.short_dropped);
    DOCTEST_CHECK(sel.padded.size() == 2);  // exactly rows 2 and 3 are left
    std::sort(sel.padded.begin(), sel.padded.end());
    DOCTEST_CHECK(sel.padded == std::vector<std::int64_t>{2, 3});
  }
}

DOCTEST_TEST_CASE("normalize_whitespace") {
  using kalm::mine::normalize_whitespace;
  DOCTEST_CHECK(normalize_whitespace("  a \t b\n\nc  ") == "a b c");
  DOCTEST_CHECK(normalize_whitespace("a\xC2\xA0" "b") == "a b");  // U+00A0 is White_Space
  DOCTEST_CHECK(normalize_whitespace("A b") != normalize_whitespace("a b"));
  DOCTEST_CHECK(normalize_whitespace("") == "");
  DOCTEST_CHECK(normalize_whitespace(" \t ") == "");
  DOCTEST_CHECK(normalize_whitespace("x\xFF  y") == "x\xFF y");  // invalid UTF-8 kept
}

DOCTEST_TEST_CASE("parse_range") {
  DOCTEST_CHECK(kalm::mine::parse_range("50-100", "--range") == std::pair<std::int64_t, std::int64_t>{50, 100});
  DOCTEST_CHECK(kalm::mine::parse_range("0-1", "--range") == std::pair<std::int64_t, std::int64_t>{0, 1});
  for (const char* bad : {"", "5", "5-5", "6-5", "-5", "a-b", "5-10x", "1-2-3"})
    DOCTEST_CHECK_THROWS_AS(kalm::mine::parse_range(bad, "--range"), kalm::UsageError);
}

DOCTEST_TEST_CASE("uniform_index stays in range and is reproducible") {
  std::mt19937_64 a(1), b(1);
  for (int i = 0; i < 100; ++i) {
    auto x = kalm::mine::uniform_index(a, 7);
    DOCTEST_CHECK(x < 7);
    DOCTEST_CHECK(x == kalm::mine::uniform_index(b, 7));
  }
}
