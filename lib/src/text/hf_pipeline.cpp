// Shared pieces of the HF pipeline: patterns, split behaviours, the byte-level table.
#include <algorithm>

#include "hf_components.h"

namespace kalm::text::detail {

Pattern::Pattern(JsonElement pattern, const std::string& ctx) {
  json_object(pattern, ctx);
  if (auto s = json_field(pattern, "String")) {
    literal_ = std::string(json_as_string(*s, ctx + ".String"));
    // An empty literal is an empty regex in HF (it matches between every character).
    if (literal_.empty()) regex_ = std::make_unique<Regex>("", ctx + ".String");
  } else if (auto r = json_field(pattern, "Regex")) {
    regex_ = std::make_unique<Regex>(json_as_string(*r, ctx + ".Regex"), ctx + ".Regex");
  } else {
    json_fail(ctx, "expected {\"String\": ...} or {\"Regex\": ...}");
  }
}

Pattern::Pattern(std::string literal) : literal_(std::move(literal)) {
  if (literal_.empty()) regex_ = std::make_unique<Regex>("", "pattern");
}

void Pattern::find_all(std::string_view text, std::vector<Span>& out) const {
  if (regex_) {
    regex_->find_all(text, out);
    return;
  }
  out.clear();
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t hit = text.find(literal_, pos);
    if (hit == std::string_view::npos) break;
    out.emplace_back(hit, hit + literal_.size());
    pos = hit + literal_.size();
  }
}

SplitBehavior parse_split_behavior(std::string_view name, const std::string& ctx) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  json_fail(ctx, "unknown split behavior \"" + std::string(name) + "\"");
}

void split_spans(std::size_t length, const std::vector<Span>& matches, bool invert,
                 SplitBehavior behavior, std::vector<Span>& out) {
  // (span, is_match) covering the whole text, as HF's Pattern::find_matches.
  struct Part {
    Span span;
    bool is_match;
  };
  std::vector<Part> parts;
  parts.reserve(matches.size() * 2 + 1);
  std::size_t prev = 0;
  for (const Span& m : matches) {
    if (prev != m.first) parts.push_back({{prev, m.first}, invert});
    parts.push_back({m, !invert});
    prev = m.second;
  }
  if (prev != length) parts.push_back({{prev, length}, invert});

  // (span, remove) after the behaviour.
  std::vector<Part> splits;
  splits.reserve(parts.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) splits.push_back({p.span, false});
      break;
    case SplitBehavior::kRemoved:
      splits = parts;
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match == previous_match && !splits.empty()) {
          splits.back().span.second = p.span.second;
        } else {
          splits.push_back({p.span, false});
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !splits.empty()) {
          splits.back().span.second = p.span.second;
        } else {
          splits.push_back({p.span, false});
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !splits.empty()) {
          splits.back().span.first = it->span.first;
        } else {
          splits.push_back({it->span, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (const Part& s : splits) {
    if (!s.is_match && s.span.second > s.span.first) out.push_back(s.span);
  }
}

namespace {

struct ByteLevelTables {
  std::array<std::string, 256> chars;
  std::array<int16_t, 512> bytes;  // code point (< 512) -> byte, -1 if none
  ByteLevelTables() {
    bytes.fill(-1);
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = direct[b] ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      append_utf8(chars[b], c);
      bytes[c] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& tables() {
  static const ByteLevelTables t;
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_level_chars() { return tables().chars; }

int byte_level_byte(char32_t c) { return c < 512 ? tables().bytes[c] : -1; }

}  // namespace kalm::text::detail
