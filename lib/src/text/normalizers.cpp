// HF normalizers: NFC/NFD/NFKC/NFKD, Lowercase, Replace, Prepend, Strip,
// StripAccents, ByteLevel, BertNormalizer, Sequence.
#include <utf8proc.h>

#include "hf_components.h"

namespace kalm::text::detail {

namespace {

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& s) const override { s = text::normalize(s, form_); }

 private:
  NormalForm form_;
};

class Lowercase final : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) append_lowercase(out, next_code_point(s, i));
    s.swap(out);
  }
};

class Replace final : public Normalizer {
 public:
  Replace(JsonElement e, const std::string& ctx)
      : pattern_(json_require(e, "pattern", ctx), json_path(ctx, "pattern")),
        content_(json_string(e, "content", ctx)) {}
  void normalize(std::string& s) const override {
    bool ignored = true;
    normalize(s, ignored);
  }
  void normalize(std::string& s, bool& origin_kept) const override {
    std::vector<Span> matches;
    pattern_.find_all(s, matches);
    if (matches.empty()) return;
    if (content_.empty() && matches.front().first == 0 && matches.front().second > 0) origin_kept = false;
    std::string out;
    out.reserve(s.size() + matches.size() * content_.size());
    std::size_t prev = 0;
    for (const Span& m : matches) {
      out.append(s, prev, m.first - prev);
      out += content_;
      prev = m.second;
    }
    out.append(s, prev, std::string::npos);
    s.swap(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

bool first_is_white_space(const std::string& s) {
  std::size_t i = 0;
  return is_white_space(next_code_point(s, i));
}

bool first_is_nonspacing_mark(const std::string& s) {
  std::size_t i = 0;
  return !s.empty() && is_mark_nonspacing(next_code_point(s, i));
}

void strip_white_space(std::string& s, bool left, bool right) {
  std::size_t begin = 0, end = s.size();
  if (left) {
    std::size_t i = 0;
    while (i < s.size()) {
      std::size_t j = i;
      if (!is_white_space(next_code_point(s, j))) break;
      i = j;
    }
    begin = i;
  }
  if (right) {
    // Walk back over whole code points.
    while (end > begin) {
      std::size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      std::size_t j = start;
      if (!is_white_space(next_code_point(s, j))) break;
      end = start;
    }
  }
  s = s.substr(begin, end - begin);
}

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override { strip_white_space(s, left_, right_); }
  void normalize(std::string& s, bool& origin_kept) const override {
    const std::size_t before = s.size();
    const bool starts_with_space = !s.empty() && first_is_white_space(s);
    strip_white_space(s, left_, right_);
    if (left_ && starts_with_space && s.size() != before) origin_kept = false;
  }

 private:
  bool left_, right_;
};

void remove_nonspacing_marks(std::string& s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t begin = i;
    const char32_t c = next_code_point(s, i);
    if (!is_mark_nonspacing(c)) out.append(s, begin, i - begin);
  }
  s.swap(out);
}

class StripAccents final : public Normalizer {
 public:
  void normalize(std::string& s) const override { remove_nonspacing_marks(s); }
  void normalize(std::string& s, bool& origin_kept) const override {
    if (first_is_nonspacing_mark(s)) origin_kept = false;
    remove_nonspacing_marks(s);
  }
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    const auto& chars = byte_level_chars();
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char b : s) out += chars[b];
    s.swap(out);
  }
};

// BERT's normaliser: control characters removed, whitespace -> ' ', CJK padded
// with spaces, optional accent stripping (after NFD) and lowercasing.
class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean, bool chinese, bool strip_accents, bool lowercase)
      : clean_(clean), chinese_(chinese), strip_accents_(strip_accents), lowercase_(lowercase) {}
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
      const std::size_t begin = i;
      const char32_t c = next_code_point(s, i);
      if (clean_) {
        if (c == 0 || c == 0xFFFD || is_control(c)) continue;
        if (is_bert_whitespace(c)) {
          out.push_back(' ');
          continue;
        }
      }
      if (chinese_ && is_chinese(c)) {
        out.push_back(' ');
        out.append(s, begin, i - begin);
        out.push_back(' ');
        continue;
      }
      out.append(s, begin, i - begin);
    }
    s.swap(out);
    if (strip_accents_) {
      s = text::normalize(s, NormalForm::kNfd);
      remove_nonspacing_marks(s);
    }
    if (lowercase_) Lowercase().normalize(s);
  }

 private:
  static bool is_bert_whitespace(char32_t c) {
    return c == '\t' || c == '\n' || c == '\r' || c == ' ' ||
           utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ZS;
  }
  static bool is_control(char32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
           cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CN;
  }
  static bool is_chinese(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
  }
  bool clean_, chinese_, strip_accents_, lowercase_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(std::string& s) const override {
    for (const auto& p : parts_) p->normalize(s);
  }
  void normalize(std::string& s, bool& origin_kept) const override {
    for (const auto& p : parts_) p->normalize(s, origin_kept);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(JsonElement e, const std::string& ctx) {
  const std::string_view type = json_type(e, ctx);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Replace") return std::make_unique<Replace>(e, ctx);
  if (type == "Prepend") return std::make_unique<Prepend>(std::string(json_string(e, "prepend", ctx)));
  if (type == "Strip") {
    return std::make_unique<Strip>(json_bool(e, "strip_left", true, ctx),
                                   json_bool(e, "strip_right", true, ctx));
  }
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "BertNormalizer") {
    const bool lowercase = json_bool(e, "lowercase", true, ctx);
    // HF: strip_accents defaults to the value of lowercase.
    auto sa = json_field(e, "strip_accents");
    const bool strip = sa ? json_as_bool(*sa, ctx + ".strip_accents") : lowercase;
    return std::make_unique<BertNormalizer>(json_bool(e, "clean_text", true, ctx),
                                            json_bool(e, "handle_chinese_chars", true, ctx),
                                            strip, lowercase);
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    std::size_t k = 0;
    for (JsonElement n : json_array(json_require(e, "normalizers", ctx), ctx + ".normalizers")) {
      parts.push_back(make_normalizer(n, ctx + ".normalizers[" + std::to_string(k++) + "]"));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  json_fail(ctx, "unsupported normalizer type \"" + std::string(type) + "\"");
}

}  // namespace kalm::text::detail
