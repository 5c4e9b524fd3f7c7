#include "bpe_model.h"

#include <algorithm>
#include <functional>
#include <queue>

#include "kalm/text/unicode.h"

namespace kalm::text::detail {

void MergeMap::build(std::size_t expected) {
  std::size_t cap = 16;
  while (cap < expected * 2) cap <<= 1;
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  size_ = 0;
}

void MergeMap::insert(int32_t a, int32_t b, Value v) {
  const uint64_t key = make_key(a, b);
  std::size_t i = hash(key) & mask_;
  while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
  if (slots_[i].key == kEmpty) ++size_;
  slots_[i].key = key;
  slots_[i].value = v;
}

namespace {

const char kHex[] = "0123456789ABCDEF";

}  // namespace

BpeModel::BpeModel(JsonElement model, const std::string& ctx) : ctx_(ctx) {
  if (auto t = json_opt_string(model, "type", ctx); t && *t != "BPE") {
    json_fail(ctx, "unsupported model type \"" + std::string(*t) +
                       "\" (kalm supports BPE tokenizer.json models and SentencePiece .model files)");
  }
  if (auto u = json_opt_string(model, "unk_token", ctx)) unk_token_ = std::string(*u);
  if (auto p = json_opt_string(model, "continuing_subword_prefix", ctx)) prefix_ = std::string(*p);
  if (auto s = json_opt_string(model, "end_of_word_suffix", ctx)) suffix_ = std::string(*s);
  fuse_unk_ = json_bool(model, "fuse_unk", false, ctx);
  byte_fallback_ = json_bool(model, "byte_fallback", false, ctx);
  ignore_merges_ = json_bool(model, "ignore_merges", false, ctx);
  // BPE dropout is a training-time regulariser; kalm always encodes deterministically.

  // ---- vocab
  const std::string vctx = ctx + ".vocab";
  auto vocab_obj = json_object(json_require(model, "vocab", ctx), vctx);
  vocab_.reserve(vocab_obj.size() * 2);
  int32_t max_id = -1;
  for (auto [key, value] : vocab_obj) {
    const int32_t id = json_id(value, vctx + "." + std::string(key));
    storage_.emplace_back(key);
    const std::string_view k = storage_.back();
    vocab_[k] = id;  // a repeated key keeps its last id, as serde's map does
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(static_cast<std::size_t>(max_id + 1), std::string_view());
  has_id_.assign(static_cast<std::size_t>(max_id + 1), 0);
  for (const auto& [k, id] : vocab_) {
    id_to_token_[id] = k;
    has_id_[id] = 1;
  }
  if (unk_token_) {
    auto it = vocab_.find(*unk_token_);
    if (it != vocab_.end()) unk_id_ = it->second;
  }

  // ---- byte fallback and single-character fast paths
  byte_fallback_all_ = true;
  for (int b = 0; b < 256; ++b) {
    const char name[7] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>', 0};
    auto it = vocab_.find(std::string_view(name, 6));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
    if (byte_ids_[b] < 0) byte_fallback_all_ = false;
  }
  if (prefix_.empty() && suffix_.empty()) {
    small_char_ids_.assign(0x10000, -1);
    for (const auto& [k, id] : vocab_) {
      if (k.empty() || k.size() > 3) continue;
      std::size_t i = 0;
      const char32_t c = next_code_point(k, i);
      if (i == k.size() && c < 0x10000) small_char_ids_[c] = id;
    }
  }

  // ---- merges, as [a, b] pairs or legacy "a b" strings
  const std::string mctx = ctx + ".merges";
  auto merges = json_array(json_require(model, "merges", ctx), mctx);
  merges_.build(merges.size());
  std::string merged;
  uint32_t rank = 0;
  for (JsonElement m : merges) {
    const std::string ectx = mctx + "[" + std::to_string(rank) + "]";
    std::string_view a, b;
    if (m.is_string()) {
      const std::string_view line = json_as_string(m, ectx);
      if (line.rfind("#version", 0) == 0) continue;
      const auto space = line.find(' ');
      if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos)
        json_fail(ectx, "a merge must be two tokens separated by one space, got \"" +
                            std::string(line) + "\"");
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else {
      auto pair = json_array(m, ectx);
      if (pair.size() != 2) json_fail(ectx, "a merge must be a pair [a, b]");
      a = json_as_string(pair.at(0).value(), ectx + "[0]");
      b = json_as_string(pair.at(1).value(), ectx + "[1]");
    }
    auto ia = vocab_.find(a);
    if (ia == vocab_.end()) json_fail(ectx, "merge token \"" + std::string(a) + "\" is not in the vocab");
    auto ib = vocab_.find(b);
    if (ib == vocab_.end()) json_fail(ectx, "merge token \"" + std::string(b) + "\" is not in the vocab");
    if (b.size() < prefix_.size()) json_fail(ectx, "merge token shorter than the subword prefix");
    merged.assign(a);
    merged.append(b.substr(prefix_.size()));
    auto inew = vocab_.find(merged);
    if (inew == vocab_.end())
      json_fail(ectx, "merged token \"" + merged + "\" is not in the vocab");
    merges_.insert(ia->second, ib->second, {rank, inew->second});
    ++rank;
  }

  cache_ = std::make_unique<Shard[]>(kShards);
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string_view* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

int32_t BpeModel::char_id(std::string_view ch) const {
  if (!small_char_ids_.empty() && ch.size() <= 3) {
    std::size_t i = 0;
    const char32_t c = next_code_point(ch, i);
    return small_char_ids_[c];
  }
  auto it = vocab_.find(ch);
  return it == vocab_.end() ? -1 : it->second;
}

bool BpeModel::take_whole(std::string_view word, std::vector<int32_t>& out) const {
  if (!ignore_merges_) return false;
  auto it = vocab_.find(word);
  if (it == vocab_.end()) return false;
  out.push_back(it->second);
  return true;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty() || take_whole(word, out)) return;
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  Shard* shard = nullptr;
  uint64_t key = 0;
  if (cacheable) {
    key = std::hash<std::string_view>()(word);
    shard = &cache_[(key >> 7) % kShards];
    std::shared_lock lock(shard->mutex);
    auto it = shard->map.find(key);
    if (it != shard->map.end() && it->second.word == word) {
      out.insert(out.end(), it->second.ids.begin(), it->second.ids.end());
      return;
    }
  }
  const std::size_t mark = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::vector<int32_t> ids(out.begin() + static_cast<std::ptrdiff_t>(mark), out.end());
    std::unique_lock lock(shard->mutex);
    if (shard->map.size() >= kShardCapacity) shard->map.clear();
    shard->map[key] = CacheEntry{std::string(word), std::move(ids)};
  }
}

void BpeModel::tokenize_with_dropout(std::string_view word, std::vector<int32_t>& out, double p,
                                     DropoutRng& rng) const {
  // As HF: with ignore_merges a whole vocab entry is taken before any merge.
  if (word.empty() || take_whole(word, out)) return;
  merge_word(word, out, p, &rng);
}

void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& out, double dropout,
                          DropoutRng* rng) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  // Per-thread scratch: merge_word runs once per pre-token, so reusing the buffers
  // saves two allocations per word.
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  const auto add = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, -1, true});
    if (n > 0) symbols[n - 1].next = n;
  };

  // Pending unk: fused runs of unknown characters become one unk.
  bool have_unk = false;
  std::string piece;
  std::size_t i = 0;
  while (i < w.size()) {
    const std::size_t begin = i;
    i += utf8_length(static_cast<unsigned char>(w[i]));
    const bool is_first = begin == 0;
    const bool is_last = i >= w.size();
    std::string_view s = w.substr(begin, i - begin);
    int32_t id;
    if ((is_first || prefix_.empty()) && (!is_last || suffix_.empty())) {
      id = char_id(s);
    } else {
      piece.clear();
      if (!is_first) piece += prefix_;
      piece.append(s);
      if (is_last) piece += suffix_;
      s = piece;
      auto it = vocab_.find(s);
      id = it == vocab_.end() ? -1 : it->second;
    }
    if (id >= 0) {
      if (have_unk) {
        add(*unk_id_);
        have_unk = false;
      }
      add(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = byte_fallback_all_;
      if (!all) {
        all = true;
        for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      }
      if (all) {
        // HF keeps a pending unk across byte-fallback characters and emits it later.
        for (unsigned char b : s) add(byte_ids_[b]);
        continue;
      }
    }
    if (unk_token_) {
      if (!unk_id_) {
        throw ModelError(ctx_ + ": unk_token \"" + *unk_token_ + "\" is not in the vocab");
      }
      if (have_unk && !fuse_unk_) add(*unk_id_);
      have_unk = true;
    }
    // Without an unk token HF drops the character; kalm keeps that for parity.
  }
  if (have_unk) add(*unk_id_);

  struct Merge {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Merge& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  // A min-heap on (rank, position) in a reused buffer.
  thread_local std::vector<Merge> heap;
  heap.clear();
  const auto push = [](const Merge& m) {
    heap.push_back(m);
    std::push_heap(heap.begin(), heap.end(), std::greater<Merge>());
  };
  for (std::size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const auto* m = merges_.find(symbols[k].id, symbols[k + 1].id))
      heap.push_back({m->rank, static_cast<int32_t>(k), m->new_id});
  }
  std::make_heap(heap.begin(), heap.end(), std::greater<Merge>());
  // BPE dropout: merges drawn for skipping, queued again once another merge applies.
  thread_local std::vector<Merge> skipped;
  skipped.clear();
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Merge>());
    const Merge top = heap.back();
    heap.pop_back();
    // Dropout is drawn for every entry taken from the queue, before the checks
    // below, as HF's Word::merge_all does.
    if (dropout > 0 && rng->uniform() < dropout) {
      skipped.push_back(top);
      continue;
    }
    for (const Merge& s : skipped) push(s);
    skipped.clear();
    Symbol& cur = symbols[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    // Skip stale entries: the pair changed since this merge was queued.
    const auto* m = merges_.find(cur.id, right.id);
    if (!m || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    cur.next = right.next;
    symbols[next_pos].alive = false;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const auto* pm = merges_.find(symbols[cur.prev].id, cur.id))
        push({pm->rank, cur.prev, pm->new_id});
    }
    if (cur.next >= 0) {
      if (const auto* nm = merges_.find(cur.id, symbols[cur.next].id))
        push({nm->rank, top.pos, nm->new_id});
    }
  }
  for (const Symbol& s : symbols) {
    if (s.alive) out.push_back(s.id);
  }
  // Do not let one huge word pin its buffers for the thread's lifetime.
  constexpr std::size_t kKeep = 1 << 16;
  if (symbols.capacity() > kKeep) std::vector<Symbol>().swap(symbols);
  if (heap.capacity() > kKeep) std::vector<Merge>().swap(heap);
  if (skipped.capacity() > kKeep) std::vector<Merge>().swap(skipped);
}

}  // namespace kalm::text::detail
