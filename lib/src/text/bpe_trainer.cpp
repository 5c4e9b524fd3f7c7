// Training a byte-level BPE tokenizer in Qwen2's pipeline (tokenizer.h says why
// this pipeline): pre-tokenize with the very stages the written tokenizer.json
// declares, count words, then merge the most frequent adjacent pair until the
// vocabulary is full.
#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hf_components.h"
#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/text/tokenizer.h"
#include "kalm/text/unicode.h"

namespace kalm::text {

namespace {

// transformers' Qwen2Tokenizer (v5) builds exactly these stages whatever
// tokenizer.json says (for model_type qwen2 it ignores tokenizer_class), so a
// tokenizer that is to survive that must use them.
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string normalizer_json() { return R"({"type": "NFC"})"; }

std::string pre_tokenizer_json() {
  std::string out = R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": )";
  io::append_json_string(out, kQwen2Pattern);
  out += R"(}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, )"
         R"("trim_offsets": false, "use_regex": false}]})";
  return out;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count = 0;
};

// The most frequent pair first; equal counts: the smaller (left, right) ids,
// so that the result does not depend on hash order.
struct Candidate {
  int64_t count;
  uint64_t pair;
  bool operator<(const Candidate& o) const { return count != o.count ? count < o.count : pair > o.pair; }
};

}  // namespace

std::string train_byte_level_bpe(const std::vector<std::string>& texts, const ByteLevelBpeTrainOptions& options) {
  if (texts.empty()) throw UsageError("train_byte_level_bpe: no texts to train on");
  const std::size_t specials = options.special_tokens.size();
  if (options.vocab_size < 256 + specials + 1)
    throw UsageError("a byte-level BPE vocabulary holds the 256 bytes, the " + std::to_string(specials) +
                     " special token(s) and at least one merge: the size must be at least " +
                     std::to_string(256 + specials + 1) + ", got " + std::to_string(options.vocab_size));
  std::unordered_set<std::string> seen_specials;
  for (const std::string& s : options.special_tokens) {
    if (s.empty() || !seen_specials.insert(s).second)
      throw UsageError("train_byte_level_bpe: special tokens must be distinct and non-empty");
    check_utf8(s, "special token");
  }

  simdjson::dom::parser parser;
  const std::string norm_text = normalizer_json(), pre_text = pre_tokenizer_json();
  simdjson::padded_string norm_padded(norm_text), pre_padded(pre_text);
  const auto normalizer = detail::make_normalizer(parser.parse(norm_padded).value(), "normalizer");
  simdjson::dom::parser parser2;
  const auto pre_tokenizer = detail::make_pre_tokenizer(parser2.parse(pre_padded).value(), "pre_tokenizer");

  // Base symbols: the byte-level character of byte b has id b.
  const auto& chars = detail::byte_level_chars();
  std::vector<std::string> vocab(chars.begin(), chars.end());
  std::unordered_map<std::string, int32_t> char_id;
  for (int b = 0; b < 256; ++b) char_id.emplace(chars[b], b);

  std::unordered_map<std::string, int64_t> word_counts;
  for (std::size_t t = 0; t < texts.size(); ++t) {
    check_utf8(texts[t], "training text " + std::to_string(t + 1));
    detail::Pieces pieces(1);
    pieces[0].text = texts[t];
    pieces[0].at_origin = true;
    normalizer->normalize(pieces[0].text);
    pre_tokenizer->pre_tokenize(pieces);
    for (const detail::Piece& p : pieces) ++word_counts[p.text];
  }
  // Sorted words: the same corpus gives the same merges whatever the hash order.
  std::vector<std::pair<std::string, int64_t>> sorted(word_counts.begin(), word_counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words(sorted.size());
  for (std::size_t w = 0; w < sorted.size(); ++w) {
    const std::string& text = sorted[w].first;
    words[w].count = sorted[w].second;
    std::size_t i = 0;
    while (i < text.size()) {
      const std::size_t begin = i;
      next_code_point(text, i);
      words[w].symbols.push_back(char_id.at(text.substr(begin, i - begin)));
    }
  }

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  const auto add_pairs = [&](int32_t w, int64_t sign, std::vector<uint64_t>* changed) {
    const Word& word = words[w];
    for (std::size_t k = 0; k + 1 < word.symbols.size(); ++k) {
      const uint64_t key = pair_key(word.symbols[k], word.symbols[k + 1]);
      pair_count[key] += sign * word.count;
      if (sign > 0) pair_words[key].push_back(w);
      if (changed) changed->push_back(key);
    }
  };
  for (std::size_t w = 0; w < words.size(); ++w) add_pairs(static_cast<int32_t>(w), 1, nullptr);
  std::priority_queue<Candidate> queue;
  for (const auto& [key, count] : pair_count) queue.push({count, key});

  std::vector<std::pair<int32_t, int32_t>> merges;
  std::unordered_map<std::string, int32_t> vocab_ids(char_id);
  std::vector<uint8_t> touched(words.size(), 0);
  std::vector<uint64_t> changed;
  while (vocab.size() + specials < options.vocab_size && !queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const auto it = pair_count.find(top.pair);
    const int64_t current = it == pair_count.end() ? 0 : it->second;
    if (current != top.count) {  // stale: the count moved since this entry was queued
      if (current > 0) queue.push({current, top.pair});
      continue;
    }
    if (current <= 0) break;
    const auto a = static_cast<int32_t>(top.pair >> 32), b = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    std::string merged = vocab[a] + vocab[b];
    // Two different pairs can spell the same string ("ab"+"c" and "a"+"bc"):
    // one token, the later merge pointing at it, as a tokenizer.json allows.
    const auto [slot, is_new] = vocab_ids.try_emplace(merged, static_cast<int32_t>(vocab.size()));
    const int32_t new_id = slot->second;
    if (is_new) vocab.push_back(std::move(merged));
    merges.emplace_back(a, b);
    changed.clear();
    std::vector<int32_t> where = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    for (int32_t w : where) {
      if (touched[w]) continue;
      touched[w] = 1;
      std::vector<int32_t>& s = words[w].symbols;
      bool has = false;
      for (std::size_t k = 0; k + 1 < s.size() && !has; ++k) has = s[k] == a && s[k + 1] == b;
      if (!has) continue;
      add_pairs(w, -1, &changed);
      std::vector<int32_t> out;
      out.reserve(s.size());
      for (std::size_t k = 0; k < s.size(); ++k) {
        if (k + 1 < s.size() && s[k] == a && s[k + 1] == b) {
          out.push_back(new_id);
          ++k;
        } else {
          out.push_back(s[k]);
        }
      }
      s = std::move(out);
      add_pairs(w, 1, &changed);
    }
    for (int32_t w : where) touched[w] = 0;
    pair_count.erase(top.pair);
    std::sort(changed.begin(), changed.end());
    changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
    for (uint64_t key : changed) {
      auto c = pair_count.find(key);
      if (c == pair_count.end()) continue;
      if (c->second <= 0) {
        pair_count.erase(c);
        continue;
      }
      queue.push({c->second, key});
    }
  }

  // Special tokens after the merges, as added tokens that are cut out first.
  std::string out = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  for (std::size_t k = 0; k < specials; ++k) {
    out += k ? ",\n    {\"id\": " : "\n    {\"id\": ";
    out += std::to_string(vocab.size() + k) + ", \"content\": ";
    io::append_json_string(out, options.special_tokens[k]);
    out += ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}";
  }
  out += "\n  ],\n  \"normalizer\": " + normalizer_json() + ",\n  \"pre_tokenizer\": " + pre_tokenizer_json() +
         ",\n  \"post_processor\": null,\n"
         "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n"
         "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": \"\", "
         "\"end_of_word_suffix\": \"\", \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,\n"
         "    \"vocab\": {";
  for (std::size_t id = 0; id < vocab.size(); ++id) {
    out += id ? ", " : "";
    io::append_json_string(out, vocab[id]);
    out += ": " + std::to_string(id);
  }
  for (std::size_t k = 0; k < specials; ++k) {
    out += ", ";
    io::append_json_string(out, options.special_tokens[k]);
    out += ": " + std::to_string(vocab.size() + k);
  }
  out += "},\n    \"merges\": [";
  for (std::size_t m = 0; m < merges.size(); ++m) {
    out += m ? ", [" : "[";
    io::append_json_string(out, vocab[merges[m].first]);
    out += ", ";
    io::append_json_string(out, vocab[merges[m].second]);
    out += "]";
  }
  out += "]}\n}\n";
  return out;
}

}  // namespace kalm::text
