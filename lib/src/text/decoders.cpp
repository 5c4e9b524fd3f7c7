// HF decoders: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder,
// WordPiece, Sequence.
#include "hf_components.h"

namespace kalm::text::detail {

namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      const std::size_t mark = bytes.size();
      bool all_mapped = true;
      std::size_t i = 0;
      while (i < t.size()) {
        const int b = byte_level_byte(next_code_point(t, i));
        if (b < 0) {
          all_mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      // A token that is not byte-level text (e.g. an added token) stays as it is.
      if (!all_mapped) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(JsonElement e, const std::string& ctx)
      : pattern_(json_require(e, "pattern", ctx), json_path(ctx, "pattern")),
        content_(json_string(e, "content", ctx)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<Span> matches;
    for (std::string& t : tokens) {
      pattern_.find_all(t, matches);
      if (matches.empty()) continue;
      std::string out;
      std::size_t prev = 0;
      for (const Span& m : matches) {
        out.append(t, prev, m.first - prev);
        out += content_;
        prev = m.second;
      }
      out.append(t, prev, std::string::npos);
      t.swap(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      if (!find_invalid_utf8(pending)) {
        out.push_back(pending);
      } else {
        // HF emits one U+FFFD per byte when the run is not valid UTF-8.
        for (std::size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        const int hi = hex_value(t[3]), lo = hex_value(t[4]);
        if (hi >= 0 && lo >= 0) byte = hi * 16 + lo;
      }
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, std::size_t start, std::size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<char32_t> chars;
      std::size_t i = 0;
      while (i < t.size()) chars.push_back(next_code_point(t, i));
      std::size_t start_cut = 0;
      for (std::size_t k = 0; k < start_ && k < chars.size(); ++k) {
        if (chars[k] != content_) break;
        start_cut = k + 1;
      }
      std::size_t stop_cut = chars.size();
      for (std::size_t k = 0; k < stop_ && k < chars.size(); ++k) {
        const std::size_t index = chars.size() - k - 1;
        if (chars[index] != content_) break;
        stop_cut = index;
      }
      std::string out;
      for (std::size_t k = start_cut; k < stop_cut; ++k) append_utf8(out, chars[k]);
      t.swap(out);
    }
  }

 private:
  char32_t content_;
  std::size_t start_, stop_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepend)
      : replacement_(std::move(replacement)), prepend_(prepend) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      std::string& t = tokens[k];
      std::string out;
      std::size_t pos = 0, hit;
      while ((hit = t.find(replacement_, pos)) != std::string::npos) {
        out.append(t, pos, hit - pos);
        if (!(k == 0 && prepend_)) out.push_back(' ');
        pos = hit + replacement_.size();
      }
      out.append(t, pos, std::string::npos);
      t.swap(out);
    }
  }

 private:
  std::string replacement_;
  bool prepend_;
};

class BpeDecoder final : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    if (suffix_.empty()) return;
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      const char* replacement = k + 1 == tokens.size() ? "" : " ";
      std::string& t = tokens[k];
      std::string out;
      std::size_t pos = 0, hit;
      while ((hit = t.find(suffix_, pos)) != std::string::npos) {
        out.append(t, pos, hit - pos);
        out += replacement;
        pos = hit + suffix_.size();
      }
      out.append(t, pos, std::string::npos);
      t.swap(out);
    }
  }

 private:
  std::string suffix_;
};

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup)
      : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      std::string& t = tokens[k];
      if (k != 0) {
        if (t.compare(0, prefix_.size(), prefix_) == 0) {
          t.erase(0, prefix_.size());
        } else {
          t.insert(0, " ");
        }
      }
      if (cleanup_) {
        replace_all(t, " .", ".");
        replace_all(t, " ?", "?");
        replace_all(t, " !", "!");
        replace_all(t, " ,", ",");
        replace_all(t, " ' ", "'");
        replace_all(t, " n't", "n't");
        replace_all(t, " 'm", "'m");
        replace_all(t, " do not", " don't");
        replace_all(t, " 's", "'s");
        replace_all(t, " 've", "'ve");
        replace_all(t, " 're", "'re");
      }
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

char32_t single_char(std::string_view s, const std::string& ctx) {
  check_utf8(s, ctx);
  std::size_t i = 0;
  if (s.empty()) json_fail(ctx, "expected one character");
  const char32_t c = next_code_point(s, i);
  if (i != s.size()) json_fail(ctx, "expected one character, got \"" + std::string(s) + "\"");
  return c;
}

std::size_t json_size(JsonElement obj, std::string_view key, const std::string& ctx) {
  const int64_t v = json_as_int(json_require(obj, key, ctx), json_path(ctx, key));
  if (v < 0) json_fail(json_path(ctx, key), "must not be negative");
  return static_cast<std::size_t>(v);
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(JsonElement e, const std::string& ctx) {
  const std::string_view type = json_type(e, ctx);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(e, ctx);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(single_char(json_string(e, "content", ctx), ctx + ".content"),
                                          json_size(e, "start", ctx), json_size(e, "stop", ctx));
  }
  if (type == "Metaspace") {
    const std::string_view replacement = json_string(e, "replacement", ctx);
    single_char(replacement, ctx + ".replacement");
    bool prepend = true;
    if (auto s = json_opt_string(e, "prepend_scheme", ctx)) prepend = *s != "never";
    if (auto aps = json_field(e, "add_prefix_space")) {
      if (!json_as_bool(*aps, ctx + ".add_prefix_space")) prepend = false;
    }
    return std::make_unique<MetaspaceDecoder>(std::string(replacement), prepend);
  }
  if (type == "BPEDecoder") {
    auto s = json_opt_string(e, "suffix", ctx);
    return std::make_unique<BpeDecoder>(s ? std::string(*s) : std::string("</w>"));
  }
  if (type == "WordPiece") {
    auto p = json_opt_string(e, "prefix", ctx);
    return std::make_unique<WordPieceDecoder>(p ? std::string(*p) : std::string("##"),
                                              json_bool(e, "cleanup", true, ctx));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> parts;
    std::size_t k = 0;
    for (JsonElement d : json_array(json_require(e, "decoders", ctx), ctx + ".decoders")) {
      parts.push_back(make_decoder(d, ctx + ".decoders[" + std::to_string(k++) + "]"));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  json_fail(ctx, "unsupported decoder type \"" + std::string(type) + "\"");
}

}  // namespace kalm::text::detail
