#pragma once
// The HF Unigram model (internal to kalm::text), as Hugging Face tokenizers
// applies it (models/unigram/model.rs, "optimized" encoding): a Viterbi search
// for the segmentation with the highest sum of piece scores, where a character
// no piece starts with costs (lowest score - 10) as unk; consecutive unk
// characters are fused into one unk; with byte_fallback an unk run whose every
// byte has a <0xNN> piece becomes those byte pieces instead.
//
// Ties keep the first candidate found (earlier start, then shorter piece), as
// tokenizers does, so ids equal HF's even between equally scored paths.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "subword_model.h"

namespace kalm::text::detail {

class UnigramModel final : public SubwordModel {
 public:
  // `model` is the tokenizer.json "model" object; ctx names it in errors.
  UnigramModel(JsonElement model, const std::string& ctx);

  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  const std::string_view* id_to_token(int32_t id) const override;
  std::size_t id_limit() const override { return pieces_.size(); }

 private:
  // A byte trie over every piece: node 0 is the root; an edge is looked up as
  // (node << 8 | byte) in one hash map, which keeps 250k-piece vocabularies small.
  int32_t child(int32_t node, unsigned char byte) const {
    auto it = edges_.find((static_cast<uint64_t>(node) << 8) | byte);
    return it == edges_.end() ? -1 : it->second;
  }
  void append_piece(std::string_view piece, std::vector<int32_t>& out) const;

  std::vector<std::string> pieces_;  // by id
  std::vector<std::string_view> piece_views_;
  std::vector<double> scores_;
  std::unordered_map<std::string_view, int32_t> token_to_id_;  // a repeated piece keeps its last id
  std::unordered_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> node_token_;  // trie node -> id of the piece ending there, or -1
  std::optional<int32_t> unk_id_;
  double unk_score_ = 0.0;
  bool byte_fallback_ = false;
  std::string ctx_;
};

}  // namespace kalm::text::detail
