#pragma once
// HF's AddedVocabulary (internal to kalm::text): the `added_tokens` of a
// tokenizer.json, matched before the model sees the text. Tokens with
// normalized=false are matched on the raw text; the remaining text is normalised
// and then tokens with normalized=true are matched on it. Matching is
// leftmost-longest, non-overlapping, with the single_word / lstrip / rstrip rules.
//
// Thread safety: immutable after build(); extract_and_normalize() is const.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hf_components.h"

namespace kalm::text::detail {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A byte trie answering "longest token starting here".
class TokenTrie {
 public:
  void insert(std::string_view s, int32_t value);
  bool empty() const { return nodes_.size() <= 1; }
  // Longest match starting at text[pos]: (length, value), length 0 when none.
  std::pair<std::size_t, int32_t> longest_at(std::string_view text, std::size_t pos) const;
  bool may_start(unsigned char b) const { return first_[b]; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t value = -1;
  };
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_{};
};

class AddedVocabulary {
 public:
  // `tokens` in file order; ids are assigned as HF does (existing id of the content
  // in the model vocab, else the next free id). Normalized contents are normalised
  // with `normalizer` (may be null) before matching.
  template <class ModelLookup>
  void build(std::vector<AddedToken> tokens, std::size_t model_vocab_entries,
             ModelLookup model_token_to_id, const Normalizer* normalizer);

  // Splits raw `text` into pieces (added tokens carry their id), normalising the
  // text between the raw matches as it goes. Empty pieces are dropped.
  void extract_and_normalize(std::string_view text, const Normalizer* normalizer,
                             Pieces& out) const;

  std::optional<int32_t> token_to_id(std::string_view content) const;
  const AddedToken* find_id(int32_t id) const;
  // The string decode() uses for an added id (its normalised content if any).
  std::string_view decode_content(const AddedToken& t) const;
  bool is_special(std::string_view content) const { return special_.count(std::string(content)) > 0; }
  int32_t max_id() const { return max_id_; }

 private:
  void build_tries(const Normalizer* normalizer);
  void find_matches(std::string_view s, const TokenTrie& trie,
                    std::vector<std::pair<Span, int32_t>>& out) const;

  std::unordered_map<std::string, int32_t> by_content_;
  std::unordered_map<int32_t, AddedToken> by_id_;
  std::unordered_map<int32_t, std::string> normalized_content_;
  std::unordered_set<std::string> special_;
  TokenTrie raw_trie_, normalized_trie_;
  int32_t max_id_ = -1;
};

template <class ModelLookup>
void AddedVocabulary::build(std::vector<AddedToken> tokens, std::size_t model_vocab_entries,
                            ModelLookup model_token_to_id, const Normalizer* normalizer) {
  int64_t next_id = static_cast<int64_t>(model_vocab_entries);
  for (AddedToken& t : tokens) {
    if (t.content.empty()) continue;
    int32_t id;
    if (auto it = by_content_.find(t.content); it != by_content_.end()) {
      id = it->second;
    } else if (std::optional<int32_t> mid = model_token_to_id(t.content)) {
      id = *mid;
    } else {
      id = static_cast<int32_t>(next_id++);
    }
    t.id = id;
    by_content_[t.content] = id;
    if (t.special) special_.insert(t.content);
    if (id > max_id_) max_id_ = id;
    by_id_[id] = std::move(t);
  }
  build_tries(normalizer);
}

}  // namespace kalm::text::detail
