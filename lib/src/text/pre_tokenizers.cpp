// HF pre-tokenizers: ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit,
// Digits, Punctuation, CharDelimiterSplit, BertPreTokenizer, Sequence.
#include "hf_components.h"

namespace kalm::text::detail {

namespace {

// Replaces every not-yet-final piece by the parts `split(text, at_origin, spans)`
// selects;
// `split` may rewrite the text first. Empty parts are dropped, as in HF.
template <class F>
void split_each(Pieces& pieces, F split) {
  Pieces out;
  out.reserve(pieces.size() * 2);
  std::vector<Span> spans;
  for (Piece& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    spans.clear();
    split(p.text, p.at_origin, spans);
    for (const Span& s : spans) {
      if (s.second <= s.first) continue;
      Piece q;
      q.text.assign(p.text, s.first, s.second - s.first);
      q.at_origin = p.at_origin && s.first == 0;
      out.push_back(std::move(q));
    }
  }
  pieces.swap(out);
}

constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern, "ByteLevel");
  }
  void pre_tokenize(Pieces& pieces) const override {
    std::vector<Span> matches;
    split_each(pieces, [&](std::string& text, bool at_origin, std::vector<Span>& spans) {
      if (add_prefix_space_ && (text.empty() || text[0] != ' ')) text.insert(0, " ");
      if (regex_) {
        regex_->find_all(text, matches);
        split_spans(text.size(), matches, false, SplitBehavior::kIsolated, spans);
      } else {
        spans.emplace_back(0, text.size());
      }
    });
    const auto& chars = byte_level_chars();
    std::string mapped;
    for (Piece& p : pieces) {
      if (p.id >= 0) continue;
      mapped.clear();
      for (unsigned char b : p.text) mapped += chars[b];
      p.text.swap(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(JsonElement e, const std::string& ctx)
      : pattern_(json_require(e, "pattern", ctx), json_path(ctx, "pattern")),
        behavior_(parse_split_behavior(json_string(e, "behavior", ctx), ctx + ".behavior")),
        invert_(json_bool(e, "invert", false, ctx)) {}
  void pre_tokenize(Pieces& pieces) const override {
    std::vector<Span> matches;
    split_each(pieces, [&](std::string& text, bool at_origin, std::vector<Span>& spans) {
      pattern_.find_all(text, matches);
      split_spans(text.size(), matches, invert_, behavior_, spans);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

enum class PrependScheme { kFirst, kNever, kAlways };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(Pieces& pieces) const override {
    std::vector<Span> matches;
    split_each(pieces, [&](std::string& text, bool at_origin, std::vector<Span>& spans) {
      std::string replaced;
      replaced.reserve(text.size() + replacement_.size());
      for (char c : text) {
        if (c == ' ') {
          replaced += replacement_;
        } else {
          replaced.push_back(c);
        }
      }
      text.swap(replaced);
      const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && at_origin))) {
        text.insert(0, replacement_);
      }
      if (split_) {
        matches.clear();
        std::size_t pos = 0;
        while ((pos = text.find(replacement_, pos)) != std::string::npos) {
          matches.emplace_back(pos, pos + replacement_.size());
          pos += replacement_.size();
        }
        split_spans(text.size(), matches, false, SplitBehavior::kMergedWithNext, spans);
      } else {
        spans.emplace_back(0, text.size());
      }
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

template <class Pred>
class CharSplitPreTokenizer final : public PreTokenizer {
 public:
  CharSplitPreTokenizer(Pred pred, SplitBehavior behavior) : pred_(pred), behavior_(behavior) {}
  void pre_tokenize(Pieces& pieces) const override {
    std::vector<Span> matches;
    split_each(pieces, [&](std::string& text, bool at_origin, std::vector<Span>& spans) {
      char_matches(text, pred_, matches);
      split_spans(text.size(), matches, false, behavior_, spans);
    });
  }

 private:
  Pred pred_;
  SplitBehavior behavior_;
};

template <class Pred>
std::unique_ptr<PreTokenizer> char_split(Pred pred, SplitBehavior behavior) {
  return std::make_unique<CharSplitPreTokenizer<Pred>>(pred, behavior);
}

// HF Whitespace: the runs of `\w+|[^\w\s]+`; whitespace is dropped.
class WhitespacePreTokenizer final : public PreTokenizer {
 public:
  void pre_tokenize(Pieces& pieces) const override {
    split_each(pieces, [&](std::string& text, bool at_origin, std::vector<Span>& spans) {
      int run_kind = 0;  // 0 none, 1 word, 2 other
      std::size_t run_begin = 0;
      std::size_t i = 0;
      while (i < text.size()) {
        const std::size_t begin = i;
        const char32_t c = next_code_point(text, i);
        const int kind = is_alphanumeric_word(c) ? 1 : is_white_space(c) ? 0 : 2;
        if (kind != run_kind) {
          if (run_kind != 0) spans.emplace_back(run_begin, begin);
          run_kind = kind;
          run_begin = begin;
        }
      }
      if (run_kind != 0) spans.emplace_back(run_begin, text.size());
    });
  }
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(Pieces& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class BertPreTokenizer final : public PreTokenizer {
 public:
  void pre_tokenize(Pieces& pieces) const override {
    ws_->pre_tokenize(pieces);
    punct_->pre_tokenize(pieces);
  }

 private:
  std::unique_ptr<PreTokenizer> ws_ = char_split(is_white_space, SplitBehavior::kRemoved);
  std::unique_ptr<PreTokenizer> punct_ = char_split(is_punctuation, SplitBehavior::kIsolated);
};

std::string one_char(std::string_view s, const std::string& ctx) {
  std::size_t i = 0;
  if (s.empty()) json_fail(ctx, "expected one character");
  check_utf8(s, ctx);
  next_code_point(s, i);
  if (i != s.size()) json_fail(ctx, "expected one character, got \"" + std::string(s) + "\"");
  return std::string(s);
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(JsonElement e, const std::string& ctx) {
  const std::string_view type = json_type(e, ctx);
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(json_bool(e, "add_prefix_space", true, ctx),
                                                   json_bool(e, "use_regex", true, ctx));
  }
  if (type == "Split") return std::make_unique<SplitPreTokenizer>(e, ctx);
  if (type == "Metaspace") {
    const std::string replacement = one_char(json_string(e, "replacement", ctx), ctx + ".replacement");
    PrependScheme scheme = PrependScheme::kAlways;
    if (auto s = json_opt_string(e, "prepend_scheme", ctx)) {
      if (*s == "first") scheme = PrependScheme::kFirst;
      else if (*s == "never") scheme = PrependScheme::kNever;
      else if (*s == "always") scheme = PrependScheme::kAlways;
      else json_fail(ctx + ".prepend_scheme", "unknown value \"" + std::string(*s) + "\"");
    }
    if (auto aps = json_field(e, "add_prefix_space")) {
      if (!json_as_bool(*aps, ctx + ".add_prefix_space")) {
        if (json_field(e, "prepend_scheme") && scheme != PrependScheme::kNever)
          json_fail(ctx, "add_prefix_space does not match declared prepend_scheme");
        scheme = PrependScheme::kNever;
      }
    }
    return std::make_unique<MetaspacePreTokenizer>(replacement, scheme,
                                                   json_bool(e, "split", true, ctx));
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  if (type == "WhitespaceSplit") return char_split(is_white_space, SplitBehavior::kRemoved);
  if (type == "Digits") {
    return char_split(is_numeric, json_bool(e, "individual_digits", false, ctx)
                                      ? SplitBehavior::kIsolated
                                      : SplitBehavior::kContiguous);
  }
  if (type == "Punctuation") {
    SplitBehavior b = SplitBehavior::kIsolated;
    if (auto s = json_opt_string(e, "behavior", ctx)) b = parse_split_behavior(*s, ctx + ".behavior");
    return char_split(is_punctuation, b);
  }
  if (type == "CharDelimiterSplit") {
    const std::string d = one_char(json_string(e, "delimiter", ctx), ctx + ".delimiter");
    std::size_t i = 0;
    const char32_t dc = next_code_point(d, i);
    return char_split([dc](char32_t c) { return c == dc; }, SplitBehavior::kRemoved);
  }
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    std::size_t k = 0;
    for (JsonElement p : json_array(json_require(e, "pretokenizers", ctx), ctx + ".pretokenizers")) {
      parts.push_back(make_pre_tokenizer(p, ctx + ".pretokenizers[" + std::to_string(k++) + "]"));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  json_fail(ctx, "unsupported pre_tokenizer type \"" + std::string(type) + "\"");
}

}  // namespace kalm::text::detail
