#include "added_vocabulary.h"

#include <algorithm>

namespace kalm::text::detail {

void TokenTrie::insert(std::string_view s, int32_t value) {
  std::size_t node = 0;
  for (unsigned char b : s) {
    auto& ch = nodes_[node].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), b,
                               [](const auto& p, unsigned char v) { return p.first < v; });
    if (it != ch.end() && it->first == b) {
      node = static_cast<std::size_t>(it->second);
    } else {
      const auto next = static_cast<int32_t>(nodes_.size());
      ch.insert(it, {b, next});
      nodes_.emplace_back();
      node = static_cast<std::size_t>(next);
    }
  }
  nodes_[node].value = value;
  if (!s.empty()) first_[static_cast<unsigned char>(s[0])] = true;
}

std::pair<std::size_t, int32_t> TokenTrie::longest_at(std::string_view text, std::size_t pos) const {
  std::size_t node = 0;
  std::pair<std::size_t, int32_t> best{0, -1};
  for (std::size_t i = pos; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    const auto& ch = nodes_[node].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), b,
                               [](const auto& p, unsigned char v) { return p.first < v; });
    if (it == ch.end() || it->first != b) break;
    node = static_cast<std::size_t>(it->second);
    if (nodes_[node].value >= 0) best = {i + 1 - pos, nodes_[node].value};
  }
  return best;
}

void AddedVocabulary::build_tries(const Normalizer* normalizer) {
  raw_trie_ = TokenTrie();
  normalized_trie_ = TokenTrie();
  normalized_content_.clear();
  // Ids in increasing order so that a content shared by two ids resolves the same
  // way on every run.
  std::vector<int32_t> ids;
  ids.reserve(by_id_.size());
  for (const auto& [id, t] : by_id_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (int32_t id : ids) {
    const AddedToken& t = by_id_.at(id);
    if (t.normalized) {
      std::string content = t.content;
      if (normalizer) {
        normalizer->normalize(content);
        if (content != t.content) normalized_content_[id] = content;
      }
      normalized_trie_.insert(content, id);
    } else {
      raw_trie_.insert(t.content, id);
    }
  }
}

namespace {

// Rust regex `\w$` / `^\w` and the whitespace runs that lstrip/rstrip absorb.
bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  std::size_t i = start;
  return is_alphanumeric_word(next_code_point(s, i));
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t i = 0;
  return is_alphanumeric_word(next_code_point(s, i));
}

// Start of the whitespace run that ends `s` (s.size() when none).
std::size_t space_leftmost_at_end(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    std::size_t i = start;
    if (!is_white_space(next_code_point(s, i))) break;
    end = start;
  }
  return end;
}

// Length of the whitespace run that starts `s`.
std::size_t space_rightmost_at_start(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t j = i;
    if (!is_white_space(next_code_point(s, j))) break;
    i = j;
  }
  return i;
}

}  // namespace

void AddedVocabulary::find_matches(std::string_view s, const TokenTrie& trie,
                                   std::vector<std::pair<Span, int32_t>>& out) const {
  out.clear();
  if (s.empty() || trie.empty()) {
    out.push_back({{0, s.size()}, -1});
    return;
  }
  std::size_t start_offset = 0;
  std::size_t pos = 0;
  while (pos < s.size()) {
    if (!trie.may_start(static_cast<unsigned char>(s[pos]))) {
      ++pos;
      continue;
    }
    const auto [len, id] = trie.longest_at(s, pos);
    if (len == 0) {
      ++pos;
      continue;
    }
    std::size_t start = pos;
    std::size_t stop = pos + len;
    pos = stop;  // the automaton goes on after this match whatever is decided below
    const AddedToken& t = by_id_.at(id);
    if (t.single_word) {
      const bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
      const bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) start = std::max(space_leftmost_at_end(s.substr(0, start)), start_offset);
    if (t.rstrip) stop += space_rightmost_at_start(s.substr(stop));
    if (start_offset < start) out.push_back({{start_offset, start}, -1});
    out.push_back({{start, stop}, id});
    start_offset = stop;
    // rstrip may have consumed text beyond the automaton's position.
    if (pos < stop) pos = stop;
  }
  if (start_offset != s.size()) out.push_back({{start_offset, s.size()}, -1});
}

void AddedVocabulary::extract_and_normalize(std::string_view text, const Normalizer* normalizer,
                                            Pieces& out) const {
  out.clear();
  std::vector<std::pair<Span, int32_t>> raw, norm;
  find_matches(text, raw_trie_, raw);
  for (const auto& [span, id] : raw) {
    if (span.second <= span.first) continue;
    if (id >= 0) {
      out.push_back({std::string(text.substr(span.first, span.second - span.first)), id, false});
      continue;
    }
    std::string piece(text.substr(span.first, span.second - span.first));
    bool origin_kept = span.first == 0;
    if (normalizer) normalizer->normalize(piece, origin_kept);
    find_matches(piece, normalized_trie_, norm);
    for (const auto& [nspan, nid] : norm) {
      if (nspan.second <= nspan.first) continue;
      Piece p;
      p.text = piece.substr(nspan.first, nspan.second - nspan.first);
      p.id = nid;
      p.at_origin = origin_kept && nspan.first == 0;
      out.push_back(std::move(p));
    }
  }
}

std::optional<int32_t> AddedVocabulary::token_to_id(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

const AddedToken* AddedVocabulary::find_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &it->second;
}

std::string_view AddedVocabulary::decode_content(const AddedToken& t) const {
  auto it = normalized_content_.find(t.id);
  return it == normalized_content_.end() ? std::string_view(t.content) : std::string_view(it->second);
}

}  // namespace kalm::text::detail
