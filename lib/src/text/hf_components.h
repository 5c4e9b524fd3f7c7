#pragma once
// The pipeline stages of a Hugging Face tokenizer.json (internal to kalm::text):
// normalizers, pre-tokenizers, decoders and post-processors, each built from its
// JSON object by a make_* factory that throws ModelError for malformed or
// unsupported components. Offsets are not tracked: kalm only needs the ids.
//
// Every stage is immutable after construction and safe to use from many threads.

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hf_json.h"
#include "kalm/text/unicode.h"
#include "regex.h"

namespace kalm::text::detail {

// A piece of one text on its way through the pipeline. id >= 0: the piece was
// matched as an added token and is final.
struct Piece {
  std::string text;
  int32_t id = -1;
  bool at_origin = false;  // starts at byte 0 of the original text (Metaspace "first")
};
using Pieces = std::vector<Piece>;

// The HF `Pattern`: a literal string or an (Oniguruma) regex.
class Pattern {
 public:
  Pattern(JsonElement pattern, const std::string& ctx);  // {"String": s} or {"Regex": r}
  explicit Pattern(std::string literal);
  // [begin, end) of the matches, non-overlapping, left to right.
  void find_all(std::string_view text, std::vector<Span>& out) const;

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
SplitBehavior parse_split_behavior(std::string_view name, const std::string& ctx);

// HF NormalizedString::split: given the sorted, non-overlapping `matches` in a text
// of `length` bytes, appends the [begin, end) spans of the non-empty parts that
// `behavior` keeps (invert: the matches are the parts between the delimiters).
void split_spans(std::size_t length, const std::vector<Span>& matches, bool invert,
                 SplitBehavior behavior, std::vector<Span>& out);

// One match per character for which pred(c) holds (HF's `Fn(char) -> bool` pattern).
template <class Pred>
void char_matches(std::string_view text, Pred pred, std::vector<Span>& out);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
  // The same, also clearing `origin_kept` when the first character of `s` was
  // removed (HF tracks alignments; Metaspace's prepend_scheme "first" asks whether
  // a piece still starts at byte 0 of the original text).
  virtual void normalize(std::string& s, bool& origin_kept) const { normalize(s); }
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits/transforms every piece whose id < 0; empty pieces are dropped.
  virtual void pre_tokenize(Pieces& pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Ids added to a single sequence when add_special_tokens is true.
  virtual std::size_t added_tokens() const = 0;
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
  // Appends every id process() may add (for the tokenizer's vocabulary check).
  virtual void special_ids(std::vector<int32_t>& out) const = 0;
};

std::unique_ptr<Normalizer> make_normalizer(JsonElement e, const std::string& ctx);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(JsonElement e, const std::string& ctx);
std::unique_ptr<Decoder> make_decoder(JsonElement e, const std::string& ctx);
std::unique_ptr<PostProcessor> make_post_processor(JsonElement e, const std::string& ctx);

// transformers' Llama/Gemma update_post_processor(): [bos] $A [eos].
std::unique_ptr<PostProcessor> make_bos_eos_processor(std::optional<int32_t> bos,
                                                      std::optional<int32_t> eos);

// GPT-2's byte <-> printable-character table used by the ByteLevel stages.
const std::array<std::string, 256>& byte_level_chars();
// The byte of a ByteLevel character, or -1.
int byte_level_byte(char32_t c);

template <class Pred>
void char_matches(std::string_view text, Pred pred, std::vector<Span>& out) {
  out.clear();
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t begin = i;
    const char32_t c = next_code_point(text, i);
    if (pred(c)) out.emplace_back(begin, i);
  }
}

}  // namespace kalm::text::detail
