#include "unigram_model.h"

#include <algorithm>
#include <limits>

#include "kalm/text/unicode.h"

namespace kalm::text::detail {

namespace {

// tokenizers' K_UNK_PENALTY: an unknown character scores this far below the
// lowest piece.
constexpr double kUnkPenalty = 10.0;

const char kHex[] = "0123456789ABCDEF";

}  // namespace

UnigramModel::UnigramModel(JsonElement model, const std::string& ctx) : ctx_(ctx) {
  for (auto [key, value] : json_object(model, ctx)) {
    if (key != "type" && key != "unk_id" && key != "vocab" && key != "byte_fallback")
      json_fail(json_path(ctx, key), "unknown Unigram model setting (kalm knows type, unk_id, vocab, byte_fallback)");
  }
  byte_fallback_ = json_bool(model, "byte_fallback", false, ctx);

  const std::string vctx = ctx + ".vocab";
  auto vocab = json_array(json_require(model, "vocab", ctx), vctx);
  pieces_.reserve(vocab.size());
  scores_.reserve(vocab.size());
  double min_score = std::numeric_limits<double>::infinity();
  std::size_t k = 0;
  for (JsonElement entry : vocab) {
    const std::string ectx = vctx + "[" + std::to_string(k++) + "]";
    auto pair = json_array(entry, ectx);
    if (pair.size() != 2) json_fail(ectx, "a Unigram vocab entry must be a pair [piece, score]");
    const std::string_view piece = json_as_string(pair.at(0).value(), ectx + "[0]");
    double score;
    if (pair.at(1).value().get_double().get(score) != simdjson::SUCCESS)
      json_fail(ectx + "[1]", "expected a number (the piece's score)");
    pieces_.emplace_back(piece);
    scores_.push_back(score);
    min_score = std::min(min_score, score);
  }
  if (pieces_.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max()))
    json_fail(vctx, "too many pieces");
  unk_score_ = min_score - kUnkPenalty;

  if (auto u = json_field(model, "unk_id")) {
    const int32_t id = json_id(*u, ctx + ".unk_id");
    if (pieces_.empty()) json_fail(ctx + ".unk_id", "the vocabulary is empty but an unk_id is set");
    if (static_cast<std::size_t>(id) >= pieces_.size())
      json_fail(ctx + ".unk_id", "unk_id " + std::to_string(id) + " is not an index of the " +
                                     std::to_string(pieces_.size()) + "-piece vocabulary");
    unk_id_ = id;
  }

  piece_views_.assign(pieces_.begin(), pieces_.end());
  token_to_id_.reserve(pieces_.size() * 2);
  for (std::size_t id = 0; id < pieces_.size(); ++id)
    token_to_id_[piece_views_[id]] = static_cast<int32_t>(id);

  node_token_.push_back(-1);
  edges_.reserve(pieces_.size() * 4);
  for (const auto& [piece, id] : token_to_id_) {
    int32_t node = 0;
    for (unsigned char b : piece) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | b;
      auto [it, inserted] = edges_.try_emplace(key, static_cast<int32_t>(node_token_.size()));
      if (inserted) node_token_.push_back(-1);
      node = it->second;
    }
    if (node != 0) node_token_[node] = id;
  }
}

std::optional<int32_t> UnigramModel::token_to_id(std::string_view token) const {
  auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string_view* UnigramModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= piece_views_.size()) return nullptr;
  return &piece_views_[id];
}

// tokenizers' Model::tokenize for one string of the best path: the piece's id,
// else its bytes' <0xNN> pieces (all of them must exist), else unk.
void UnigramModel::append_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (auto it = token_to_id_.find(piece); it != token_to_id_.end()) {
    out.push_back(it->second);
    return;
  }
  if (byte_fallback_) {
    const std::size_t mark = out.size();
    bool all = true;
    for (unsigned char b : piece) {
      const char name[6] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
      auto it = token_to_id_.find(std::string_view(name, 6));
      if (it == token_to_id_.end()) {
        all = false;
        break;
      }
      out.push_back(it->second);
    }
    if (all) return;
    out.resize(mark);
  }
  if (!unk_id_) throw ModelError(ctx_ + ": the text needs an unknown-piece id but the model has no unk_id");
  out.push_back(*unk_id_);
}

void UnigramModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  struct Best {
    double score = 0.0;
    int64_t start = -1;  // -1: no path ends here yet
    int32_t id = 0;
  };
  thread_local std::vector<Best> best;
  best.assign(word.size() + 1, Best{});
  std::size_t start = 0;
  while (start < word.size()) {
    const double here = best[start].score;
    const std::size_t char_len = std::min<std::size_t>(utf8_length(static_cast<unsigned char>(word[start])),
                                                       word.size() - start);
    bool has_single_char_piece = false;
    int32_t node = 0;
    for (std::size_t end = start; end < word.size(); ++end) {
      node = child(node, static_cast<unsigned char>(word[end]));
      if (node < 0) break;
      const int32_t id = node_token_[node];
      if (id < 0) continue;
      Best& target = best[end + 1];
      const double candidate = here + scores_[id];
      if (target.start < 0 || candidate > target.score) target = {candidate, static_cast<int64_t>(start), id};
      if (end + 1 - start == char_len) has_single_char_piece = true;
    }
    if (!has_single_char_piece) {
      if (!unk_id_) throw ModelError(ctx_ + ": the text needs an unknown-piece id but the model has no unk_id");
      Best& target = best[start + char_len];
      const double candidate = here + unk_score_;
      if (target.start < 0 || candidate > target.score)
        target = {candidate, static_cast<int64_t>(start), *unk_id_};
    }
    start += char_len;
  }
  // Back from the end, fusing runs of unk into one string, as tokenizers does.
  thread_local std::vector<std::pair<std::size_t, std::size_t>> spans;  // [begin, end), last first
  spans.clear();
  std::size_t end = word.size();
  std::size_t unk_begin = 0;
  bool in_unk = false;
  std::size_t unk_end = 0;
  while (end > 0) {
    const Best& node = best[end];
    const auto begin = static_cast<std::size_t>(node.start);
    if (unk_id_ && node.id == *unk_id_) {
      if (!in_unk) unk_end = end;
      in_unk = true;
      unk_begin = begin;
    } else {
      if (in_unk) spans.emplace_back(unk_begin, unk_end);
      in_unk = false;
      spans.emplace_back(begin, end);
    }
    end = begin;
  }
  if (in_unk) spans.emplace_back(unk_begin, unk_end);
  for (auto it = spans.rbegin(); it != spans.rend(); ++it)
    append_piece(word.substr(it->first, it->second - it->first), out);
  constexpr std::size_t kKeep = 1 << 16;
  if (best.capacity() > kKeep) std::vector<Best>().swap(best);
  if (spans.capacity() > kKeep) spans.clear(), spans.shrink_to_fit();
}

}  // namespace kalm::text::detail
