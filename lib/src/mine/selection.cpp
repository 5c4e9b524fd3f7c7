#include "kalm/mine/selection.h"

#include <algorithm>
#include <limits>

#include "kalm/error.h"
#include "kalm/text/unicode.h"

namespace kalm::mine {

std::int64_t rank_of_score(const std::vector<Hit>& retrieved, double anchor) {
  std::int64_t above = 0;
  for (const auto& h : retrieved)
    if (static_cast<double>(h.score) > anchor) ++above;
  return above + 1;
}

RankCheck ranking_consistency(const std::vector<Hit>& retrieved, double anchor, std::int64_t k) {
  if (k < 0) throw UsageError("--filter-topk must be >= 0, got " + std::to_string(k));
  RankCheck check;
  check.positive_rank = rank_of_score(retrieved, anchor);
  if (static_cast<std::int64_t>(retrieved.size()) > k)
    check.keep = !(anchor < static_cast<double>(retrieved[static_cast<std::size_t>(k)].score));
  return check;
}

std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n) {
  KALM_ASSERT(n > 0, "uniform_index over an empty range");
  // Rejection sampling: unbiased and the same sequence everywhere.
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % n;
}

namespace {

// Draws `need` of `items` without replacement (partial Fisher-Yates), in the
// order of `items`.
std::vector<std::int64_t> draw_in_order(const std::vector<std::int64_t>& items, std::int64_t need,
                                        std::mt19937_64& rng) {
  std::vector<std::size_t> slots(items.size());
  for (std::size_t i = 0; i < slots.size(); ++i) slots[i] = i;
  const auto n = static_cast<std::size_t>(need);
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t j = i + static_cast<std::size_t>(uniform_index(rng, slots.size() - i));
    std::swap(slots[i], slots[j]);
  }
  slots.resize(n);
  std::sort(slots.begin(), slots.end());
  std::vector<std::int64_t> out;
  out.reserve(n);
  for (auto s : slots) out.push_back(items[s]);
  return out;
}

}  // namespace

Selection select_negatives(const std::vector<Hit>& retrieved, const std::vector<std::int64_t>& pool_keys,
                           const std::unordered_set<std::int64_t>& excluded_keys, std::optional<double> anchor,
                           std::int64_t need, const SelectionRules& rules, std::mt19937_64& rng) {
  if (rules.range_begin < 0 || rules.range_end <= rules.range_begin)
    throw UsageError("--range must be A-B with 0 <= A < B");
  if ((rules.max_score_ratio || rules.margin) && !anchor)
    throw UsageError("--max-score-ratio and --margin need the positives' scores");
  Selection sel;
  if (need <= 0) return sel;

  const auto n_pool = static_cast<std::int64_t>(pool_keys.size());
  std::unordered_set<std::int64_t> seen_keys;  // keys already offered as candidates
  std::vector<std::int64_t> window;
  std::int64_t eligible_rank = 0;
  for (std::size_t r = 0; r < retrieved.size(); ++r) {
    const auto rank = static_cast<std::int64_t>(r);
    if (rules.rank_basis == RankBasis::kRetrieved && (rank < rules.range_begin || rank >= rules.range_end)) continue;
    const Hit& h = retrieved[r];
    if (h.index < 0 || h.index >= n_pool) throw InternalError("retrieved index outside the pool");
    const std::int64_t key = pool_keys[static_cast<std::size_t>(h.index)];
    if (excluded_keys.count(key)) continue;
    if (rules.max_score_ratio && static_cast<double>(h.score) > *rules.max_score_ratio * *anchor) continue;
    if (rules.margin && static_cast<double>(h.score) > *anchor - *rules.margin) continue;
    if (!seen_keys.insert(key).second) continue;
    if (rules.rank_basis == RankBasis::kEligible) {
      const std::int64_t er = eligible_rank++;
      if (er < rules.range_begin) continue;
      if (er >= rules.range_end) break;
    }
    window.push_back(h.index);
  }
  sel.eligible = static_cast<std::int64_t>(window.size());

  if (sel.eligible >= need) {
    if (rules.sampling == Sampling::kTop)
      sel.mined.assign(window.begin(), window.begin() + need);
    else
      sel.mined = draw_in_order(window, need, rng);
    return sel;
  }
  if (rules.shortfall == Shortfall::kDrop) {
    sel.short_dropped = true;
    return sel;
  }

  // Pad: every window candidate, then random pool rows with unused, unexcluded keys.
  sel.mined = window;
  std::unordered_set<std::int64_t> used_keys;
  for (auto i : window) used_keys.insert(pool_keys[static_cast<std::size_t>(i)]);
  const std::int64_t missing = need - sel.eligible;
  auto usable = [&](std::int64_t i) {
    const std::int64_t key = pool_keys[static_cast<std::size_t>(i)];
    return !excluded_keys.count(key) && !used_keys.count(key);
  };
  // Rejection sampling is cheap on a large pool; a small or mostly excluded pool
  // falls back to enumerating, so this always ends.
  std::int64_t tries = 32 * missing + 64;
  while (static_cast<std::int64_t>(sel.padded.size()) < missing && tries-- > 0 && n_pool > 0) {
    const auto i = static_cast<std::int64_t>(uniform_index(rng, static_cast<std::uint64_t>(n_pool)));
    if (!usable(i)) continue;
    used_keys.insert(pool_keys[static_cast<std::size_t>(i)]);
    sel.padded.push_back(i);
  }
  if (static_cast<std::int64_t>(sel.padded.size()) < missing) {
    std::vector<std::int64_t> rest;
    for (std::int64_t i = 0; i < n_pool; ++i)
      if (usable(i)) {
        used_keys.insert(pool_keys[static_cast<std::size_t>(i)]);  // one row per key
        rest.push_back(i);
      }
    const std::int64_t still = missing - static_cast<std::int64_t>(sel.padded.size());
    if (static_cast<std::int64_t>(rest.size()) < still) {
      sel.mined.clear();
      sel.padded.clear();
      sel.short_dropped = true;
      return sel;
    }
    auto more = draw_in_order(rest, still, rng);
    sel.padded.insert(sel.padded.end(), more.begin(), more.end());
  }
  return sel;
}

std::string normalize_whitespace(std::string_view text) {
  // Invalid UTF-8 cannot be decoded safely; such text is split on ASCII white
  // space only, its bytes kept as they are.
  const bool valid = !text::find_invalid_utf8(text).has_value();
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t start = i;
    bool space;
    if (valid) {
      space = text::is_white_space(text::next_code_point(text, i));
    } else {
      const char c = text[i++];
      space = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
    }
    if (space) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.append(text.substr(start, i - start));
  }
  return out;
}

std::pair<std::int64_t, std::int64_t> parse_range(const std::string& spec, const std::string& flag) {
  const auto dash = spec.find('-');
  try {
    if (dash == std::string::npos || dash == 0) throw std::invalid_argument("no dash");
    std::size_t used1 = 0, used2 = 0;
    const long long a = std::stoll(spec.substr(0, dash), &used1);
    const long long b = std::stoll(spec.substr(dash + 1), &used2);
    if (used1 != dash || used2 != spec.size() - dash - 1 || a < 0 || b <= a) throw std::invalid_argument("range");
    return {a, b};
  } catch (const std::exception&) {
    throw UsageError(flag + " wants A-B with 0 <= A < B (0-based, B exclusive), got '" + spec + "'");
  }
}

}  // namespace kalm::mine
