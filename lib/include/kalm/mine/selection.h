#pragma once
// The per-group rules of hard-negative mining and ranking-consistency filtering
// (kalm-recipe.md §5.1), as pure functions of a retrieved list: no model, no
// files. kalm-mine-negatives and kalm-synth-filter call these; the unit tests
// pin every rule on hand-built lists.
//
// Vocabulary:
//   pool       the candidate texts, indexed 0..N-1 (rows of the corpus matrix).
//   key        an integer per pool row naming its text after whitespace
//              normalisation (text_key): rows with equal keys hold equal texts.
//   retrieved  the top hits of one query over the pool, sorted by score
//              descending, then pool index ascending (search::exact_topk order).
//   anchor     the best positive's score: max over the group's positives of q·p.
//
// Thread safety: pure functions; the RNG passed in is the only state touched.

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace kalm::mine {

struct Hit {
  std::int64_t index = 0;  // pool row
  float score = 0;         // inner product with the query
};

// Which list the --range window counts ranks in.
enum class RankBasis {
  kRetrieved,  // ranks of the raw retrieved list, positives and excluded texts included (KaLM)
  kEligible,   // ranks among the candidates left after every exclusion
};

enum class Sampling { kRandom, kTop };
enum class Shortfall { kPad, kDrop };

struct SelectionRules {
  std::int64_t range_begin = 50;   // window [range_begin, range_end), 0-based ranks
  std::int64_t range_end = 100;
  RankBasis rank_basis = RankBasis::kRetrieved;
  std::int64_t negatives = 7;      // M: negatives per group in the output
  Sampling sampling = Sampling::kRandom;
  std::optional<double> max_score_ratio;  // drop candidates scoring > ratio × anchor
  std::optional<double> margin;           // drop candidates scoring > anchor − margin
  Shortfall shortfall = Shortfall::kPad;
};

// Outcome of the ranking-consistency filter for one query.
struct RankCheck {
  bool keep = true;
  // 1 + the number of retrieved hits scoring strictly above the anchor: the
  // positive's rank when it is in the list; retrieved.size() + 1 means "not
  // within the retrieved list".
  std::int64_t positive_rank = 0;
};

// The recipe's filter: drop when anchor < retrieved[k].score, applied only when
// retrieved.size() > k (otherwise keep). k = 50 in KaLM. A positive tied with
// the item at index k is kept. Throws UsageError for k < 0.
RankCheck ranking_consistency(const std::vector<Hit>& retrieved, double anchor, std::int64_t k);

// 1 + the number of hits scoring strictly above `anchor`.
std::int64_t rank_of_score(const std::vector<Hit>& retrieved, double anchor);

struct Selection {
  std::vector<std::int64_t> mined;   // pool rows chosen from the window, in rank order
  std::vector<std::int64_t> padded;  // pool rows added at random to make up a shortfall
  std::int64_t eligible = 0;         // candidates the window offered after exclusions
  bool short_dropped = false;        // shortfall=drop and too few candidates (nothing chosen)
};

// Chooses `need` new negatives for one group.
//   retrieved      the query's hits (see above); should reach rules.range_end
//                  (kRetrieved) or further (kEligible: the window is cut after
//                  exclusions, so retrieve more than range_end).
//   pool_keys      key of every pool row (size N).
//   excluded_keys  keys never chosen: the query's, every positive's, and the
//                  negatives the group keeps.
//   anchor         the best positive score; needed (non-null) only when
//                  max_score_ratio or margin is set (else UsageError).
// A candidate is eligible when its key is not excluded, not already chosen
// (duplicate texts in the pool count once), and it passes the score rules.
// Random sampling draws `need` of the eligible window without replacement and
// returns them in rank order; top takes the first `need`. When fewer than
// `need` are eligible: kDrop sets short_dropped and chooses nothing; kPad takes
// them all and fills up with random pool rows (any rank, key rules only, not the
// score rules), and if the whole pool cannot supply enough, short_dropped is set.
Selection select_negatives(const std::vector<Hit>& retrieved, const std::vector<std::int64_t>& pool_keys,
                           const std::unordered_set<std::int64_t>& excluded_keys, std::optional<double> anchor,
                           std::int64_t need, const SelectionRules& rules, std::mt19937_64& rng);

// Whitespace normalisation for text equality: runs of Unicode White_Space
// become one space, leading and trailing white space is removed. Nothing else
// changes (case and punctuation matter). Invalid UTF-8 bytes are kept as they are.
std::string normalize_whitespace(std::string_view text);

// Parses "A-B" (0 <= A < B) into a window. Throws UsageError naming `flag`.
std::pair<std::int64_t, std::int64_t> parse_range(const std::string& spec, const std::string& flag);

// A uniform integer in [0, n) from the RNG, identical on every platform
// (std::uniform_int_distribution is implementation-defined). n > 0.
std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n);

}  // namespace kalm::mine
