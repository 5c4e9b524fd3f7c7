#pragma once
// The HF BPE model (internal to kalm::text): vocab + ranked merges, applied to
// one pre-token at a time with a priority queue over a linked list of symbols
// (HF's word.rs algorithm: O(n log n) per word, not quadratic), byte fallback,
// unk fusing, continuing-subword prefix / end-of-word suffix and ignore_merges.
//
// Thread safety: immutable after construction except for the word cache, which is
// sharded and locked; tokenize() may be called from any number of threads.

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hf_json.h"
#include "subword_model.h"

namespace kalm::text::detail {

// Open-addressing map (token id pair) -> (rank, merged id).
class MergeMap {
 public:
  struct Value {
    uint32_t rank;
    int32_t new_id;
  };
  void build(std::size_t expected);
  void insert(int32_t a, int32_t b, Value v);  // later inserts win, as in HF
  const Value* find(int32_t a, int32_t b) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = make_key(a, b);
    std::size_t i = hash(key) & mask_;
    while (true) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s.value;
      if (s.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }
  std::size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Slot {
    uint64_t key = kEmpty;
    Value value{};
  };
  static uint64_t make_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static std::size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return static_cast<std::size_t>(k);
  }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

class BpeModel final : public SubwordModel {
 public:
  // `model` is the tokenizer.json "model" object; ctx names it in errors.
  BpeModel(JsonElement model, const std::string& ctx);

  // Appends the ids of one pre-token (non-empty, valid UTF-8) to `out`.
  // Throws ModelError when the unk token is needed but missing from the vocab.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  // HF's BPE dropout: a merge drawn for skipping waits until the next merge is
  // applied, then competes again; never cached.
  void tokenize_with_dropout(std::string_view word, std::vector<int32_t>& out, double p,
                             DropoutRng& rng) const override;

  std::optional<int32_t> token_to_id(std::string_view token) const override;
  const std::string_view* id_to_token(int32_t id) const override;
  std::size_t id_limit() const override { return id_to_token_.size(); }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out, double dropout = 0,
                  DropoutRng* rng = nullptr) const;
  int32_t char_id(std::string_view ch) const;
  // ignore_merges: a pre-token that is a vocab entry is appended whole (true).
  bool take_whole(std::string_view word, std::vector<int32_t>& out) const;

  std::deque<std::string> storage_;  // stable backing store for the views below
  std::unordered_map<std::string_view, int32_t> vocab_;
  std::vector<std::string_view> id_to_token_;
  std::vector<uint8_t> has_id_;
  MergeMap merges_;
  std::vector<int32_t> small_char_ids_;  // BMP code point -> id (plain chars only), -1 if none
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> tokens, -1 if absent
  bool byte_fallback_all_ = false;       // every <0xNN> exists
  std::optional<std::string> unk_token_;
  std::optional<int32_t> unk_id_;
  std::string prefix_;  // continuing_subword_prefix
  std::string suffix_;  // end_of_word_suffix
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string ctx_;

  // Word -> ids cache, bounded per shard (a full shard is emptied, so the cache
  // keeps following the text without unbounded growth).
  static constexpr std::size_t kShards = 64;
  static constexpr std::size_t kShardCapacity = 2048;
  static constexpr std::size_t kMaxCachedWordBytes = 256;
  struct CacheEntry {
    std::string word;
    std::vector<int32_t> ids;
  };
  // Keyed by the word's hash so that a lookup allocates nothing; the word is kept
  // to rule out collisions.
  struct Shard {
    mutable std::shared_mutex mutex;
    std::unordered_map<uint64_t, CacheEntry> map;
  };
  std::unique_ptr<Shard[]> cache_;
};

}  // namespace kalm::text::detail
