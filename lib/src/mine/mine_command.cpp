#include "kalm/mine/mine_command.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <tuple>
#include <unordered_map>

#include "kalm/cli/progress.h"
#include "kalm/encode/embed_command.h"
#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/jsonl.h"
#include "kalm/mine/retrieve.h"
#include "kalm/mine/selection.h"
#include "kalm/model/tensor_io.h"
#include "meta_json.h"

namespace kalm::mine {
namespace {

// Texts by whitespace-normalised content: one key per distinct text, and the
// first pool row holding it.
class TextKeys {
 public:
  std::int64_t key(const std::string& text) {
    auto [it, fresh] = keys_.emplace(normalize_whitespace(text), static_cast<std::int64_t>(first_row_.size()));
    if (fresh) first_row_.push_back(-1);
    return it->second;
  }
  std::int64_t first_row(std::int64_t key) const { return first_row_[static_cast<std::size_t>(key)]; }
  void set_first_row(std::int64_t key, std::int64_t row) {
    auto& r = first_row_[static_cast<std::size_t>(key)];
    if (r < 0) r = row;
  }
  std::size_t size() const { return first_row_.size(); }

 private:
  std::unordered_map<std::string, std::int64_t> keys_;
  std::vector<std::int64_t> first_row_;
};

struct Pool {
  std::vector<std::string> texts;
  std::vector<std::string> where;  // file:line of each row, for messages
  std::vector<std::int64_t> keys;
};

struct InputGroup {
  io::TrainingGroup group;
  std::string raw;    // the line as read, for the rejects stream
  std::string where;  // file:line
};

std::vector<std::string> input_list(const std::vector<std::string>& inputs) {
  return inputs.empty() ? std::vector<std::string>{"-"} : inputs;
}

std::vector<InputGroup> read_groups(const std::vector<std::string>& inputs) {
  std::vector<InputGroup> out;
  for (const auto& path : input_list(inputs)) {
    io::JsonlReader reader(path);
    InputGroup g;
    while (reader.next(g.group)) {
      g.raw.assign(reader.line());
      g.where = where(reader.name(), reader.line_number());
      out.push_back(g);
    }
  }
  return out;
}

Pool read_corpus(const std::string& path, TextKeys& keys) {
  Pool pool;
  io::JsonlReader reader(path);
  io::CorpusRecord rec;
  while (reader.next(rec)) {
    if (!rec.has_text)
      throw FormatError(where(reader.name(), reader.line_number()) +
                        ": the candidate pool needs \"text\" (\"input_ids\" cannot be compared with the groups' texts)");
    const auto row = static_cast<std::int64_t>(pool.texts.size());
    const std::int64_t key = keys.key(rec.text);
    keys.set_first_row(key, row);
    pool.texts.push_back(rec.text);
    pool.where.push_back(where(reader.name(), reader.line_number()));
    pool.keys.push_back(key);
  }
  return pool;
}

// KaLM's pool: every distinct pos and neg text, in first-occurrence order
// (pos before neg within a group). Precomputed corpus embeddings follow this order.
Pool union_pool(const std::vector<InputGroup>& groups, TextKeys& keys) {
  Pool pool;
  auto add = [&](const std::string& text, const std::string& at) {
    const std::int64_t key = keys.key(text);
    if (keys.first_row(key) >= 0) return;
    keys.set_first_row(key, static_cast<std::int64_t>(pool.texts.size()));
    pool.texts.push_back(text);
    pool.where.push_back(at);
    pool.keys.push_back(key);
  };
  for (const auto& g : groups) {
    for (const auto& p : g.group.pos) add(p, g.where);
    for (const auto& n : g.group.neg) add(n, g.where);
  }
  return pool;
}

std::string query_prefix(const std::optional<std::string>& record_instruction, const MineOptions& o) {
  const std::string& ins = record_instruction && !record_instruction->empty() ? *record_instruction : o.instruction;
  return ins.empty() ? std::string() : encode::apply_instruction(o.instruction_template, ins);
}

float row_dot(const torch::Tensor& a, const torch::Tensor& b) { return a.dot(b).item<float>(); }

std::string num(double v) {
  std::string s;
  io::append_json_number(s, v);
  return s;
}

// Counts per reason, for the summary line and the sidecar.
using Counts = std::map<std::string, std::int64_t>;

std::string counts_text(const Counts& c) {
  std::string s;
  for (const auto& [reason, n] : c) s += (s.empty() ? "" : ", ") + reason + " " + std::to_string(n);
  return s;
}

// `max_length`: the token limit the model ran with; nullopt when no model ran
// (precomputed embeddings, or no labels to rank).
void write_meta(const MineOptions& o, const cli::Tool& tool, std::optional<std::int64_t> max_length,
                std::int64_t input, std::int64_t kept, const Counts& rejected, std::int64_t pool_size,
                std::int64_t mined, std::int64_t padded) {
  MetaJson m(tool);
  m.add("mode", std::string(o.from_labels ? "from-labels" : "groups"));
  m.add("model", o.model.model);
  m.add("query_embeddings", o.query_embeddings);
  m.add("corpus_embeddings", o.corpus_embeddings);
  m.add("corpus", o.corpus);
  m.add("instruction", o.instruction);
  m.add("instruction_template", o.instruction_template);
  m.add("range", o.range);
  m.add("rank_basis", o.rank_basis);
  m.add("negatives", o.negatives);
  m.add("sampling", o.sampling);
  m.add("existing", o.existing);
  m.add("max_score_ratio", o.max_score_ratio);
  m.add("margin", o.margin);
  m.add("filter_topk", o.filter_topk);
  m.add("shortfall", o.shortfall);
  m.add("scores", o.scores);
  m.add("max_length", max_length);
  m.add("input_records", input);
  m.add("kept", kept);
  m.add("rejected", rejected);
  m.add("pool_size", pool_size);
  m.add("mined_negatives", mined);
  m.add("padded_negatives", padded);
  m.write_beside(o.output);
}

// The rejects stream, opened on the first reject; with no --rejects path a
// reject is an error (a group must never vanish).
class Rejects {
 public:
  explicit Rejects(std::string path) : path_(std::move(path)) {}
  void write(const std::string& raw, const std::string& where, const std::string& reason,
             const io::RawFields& extra) {
    if (path_.empty())
      throw Error(where + ": group dropped (" + reason + ") but no --rejects FILE was given; nothing was written");
    if (!writer_) writer_ = std::make_unique<io::JsonlWriter>(path_);
    writer_->write_reject(raw, "mine", reason, extra);
    ++counts_[reason];
  }
  void finish() {
    // An empty rejects file is still written when asked for, so a pipeline can rely on it.
    if (!path_.empty() && !writer_) writer_ = std::make_unique<io::JsonlWriter>(path_);
    if (writer_) writer_->finish();
  }
  const Counts& counts() const { return counts_; }
  std::int64_t total() const {
    std::int64_t n = 0;
    for (const auto& [r, c] : counts_) n += c;
    return n;
  }

 private:
  std::string path_;
  std::unique_ptr<io::JsonlWriter> writer_;
  Counts counts_;
};

SelectionRules rules_from(const MineOptions& o) {
  SelectionRules r;
  std::tie(r.range_begin, r.range_end) = parse_range(o.range, "--range");
  r.rank_basis = o.rank_basis == "eligible" ? RankBasis::kEligible : RankBasis::kRetrieved;
  r.negatives = o.negatives;
  r.sampling = o.sampling == "top" ? Sampling::kTop : Sampling::kRandom;
  r.max_score_ratio = o.max_score_ratio;
  r.margin = o.margin;
  r.shortfall = o.shortfall == "drop" ? Shortfall::kDrop : Shortfall::kPad;
  return r;
}

void check_options(const MineOptions& o) {
  if (o.negatives < 1) throw UsageError("--negatives must be at least 1");
  if (o.filter_topk && *o.filter_topk < 0) throw UsageError("--filter-topk must be >= 0");
  if (o.margin && *o.margin < 0) throw UsageError("--margin must be >= 0");
  const bool pre = !o.query_embeddings.empty() || !o.corpus_embeddings.empty();
  if (!o.model.model.empty() && pre)
    throw UsageError("--model and --query-embeddings/--corpus-embeddings are exclusive: give one source");
  if (o.from_labels) {
    if (pre) throw UsageError("--from-labels embeds with --model (precomputed embeddings are not supported there)");
    if (!o.corpus.empty()) throw UsageError("--from-labels takes its candidates from the input itself, not --corpus");
    if (o.filter_topk || o.max_score_ratio || o.margin || o.scores)
      throw UsageError("--filter-topk, --max-score-ratio, --margin and --scores do not apply to --from-labels");
    return;
  }
  if (!o.task.empty() || o.label_type != "classification")
    throw UsageError("--task and --label-type apply only to --from-labels");
  if (o.model.model.empty() && (o.query_embeddings.empty() || o.corpus_embeddings.empty()))
    throw UsageError("give --model, or both --query-embeddings and --corpus-embeddings");
}

// ---- training groups --------------------------------------------------------

void mine_groups(const MineOptions& o, const cli::Tool& tool) {
  const SelectionRules rules = rules_from(o);
  cli::Progress progress(tool.name(), "groups", std::nullopt, tool.common().quiet);
  auto groups = read_groups(o.inputs);

  TextKeys keys;
  Pool pool = o.corpus.empty() ? union_pool(groups, keys) : read_corpus(o.corpus, keys);
  const auto n_pool = static_cast<std::int64_t>(pool.texts.size());

  // Every text a group needs a key for.
  struct GroupKeys {
    std::int64_t query;
    std::vector<std::int64_t> pos, neg;
  };
  std::vector<GroupKeys> gkeys(groups.size());
  for (std::size_t i = 0; i < groups.size(); ++i) {
    gkeys[i].query = keys.key(groups[i].group.query);
    for (const auto& p : groups[i].group.pos) gkeys[i].pos.push_back(keys.key(p));
    for (const auto& n : groups[i].group.neg) gkeys[i].neg.push_back(keys.key(n));
  }

  const bool need_anchor = o.filter_topk || o.max_score_ratio || o.margin || o.scores;
  // Texts outside the pool whose vectors are needed: positives (for the anchor)
  // and, with --scores, the negatives a group keeps.
  std::vector<std::int64_t> extra_row(keys.size(), -1);
  std::vector<std::string> extra_texts, extra_where;
  if (need_anchor) {
    auto want = [&](std::int64_t key, const std::string& text, const std::string& at) {
      if (keys.first_row(key) >= 0 || extra_row[static_cast<std::size_t>(key)] >= 0) return;
      if (o.model.model.empty())
        throw FormatError(at + ": text '" + text.substr(0, 60) +
                          "' is not in the candidate pool, and precomputed embeddings cover only the pool; "
                          "add it to --corpus or use --model");
      extra_row[static_cast<std::size_t>(key)] = static_cast<std::int64_t>(extra_texts.size());
      extra_texts.push_back(text);
      extra_where.push_back(at);
    };
    for (std::size_t i = 0; i < groups.size(); ++i) {
      for (std::size_t p = 0; p < gkeys[i].pos.size(); ++p) want(gkeys[i].pos[p], groups[i].group.pos[p], groups[i].where);
      if (o.scores)
        for (std::size_t n = 0; n < gkeys[i].neg.size(); ++n)
          want(gkeys[i].neg[n], groups[i].group.neg[n], groups[i].where);
    }
  }

  torch::Tensor q_emb, p_emb, x_emb;
  const auto n_groups = static_cast<std::int64_t>(groups.size());
  std::optional<std::int64_t> max_length;
  if (!o.model.model.empty()) {
    TextEmbedder embedder(o.model);
    max_length = embedder.max_length();
    std::vector<std::string> qt, qp, qw;
    for (const auto& g : groups) {
      qt.push_back(g.group.query);
      qp.push_back(query_prefix(g.group.instruction, o));
      qw.push_back(g.where);
    }
    q_emb = embedder.embed(qt, qp, qw);
    p_emb = embedder.embed(pool.texts, {}, pool.where);
    x_emb = embedder.embed(extra_texts, {}, extra_where);
  } else {
    q_emb = model::load_embedding_matrix(o.query_embeddings, n_groups, "queries (one row per input group, in input order)");
    p_emb = model::load_embedding_matrix(o.corpus_embeddings, n_pool,
                                o.corpus.empty() ? "the pool (distinct pos/neg texts in first-occurrence order)"
                                                 : "the pool (one row per --corpus record)");
  }

  std::int64_t k = rules.range_end;
  if (rules.rank_basis == RankBasis::kEligible) {
    std::int64_t most = 0;
    for (const auto& g : gkeys)
      most = std::max<std::int64_t>(most, 1 + static_cast<std::int64_t>(g.pos.size() + g.neg.size()));
    k += most;
  }
  if (o.filter_topk) k = std::max(k, *o.filter_topk + 1);
  auto retrieved = retrieve(q_emb, p_emb, k, search_precision_of(o.model), search_device_of(o.model));

  auto vector_of = [&](std::int64_t key) -> torch::Tensor {
    const std::int64_t row = keys.first_row(key);
    if (row >= 0) return p_emb[row];
    const std::int64_t x = extra_row[static_cast<std::size_t>(key)];
    KALM_ASSERT(x >= 0, "a needed text has no embedding");
    return x_emb[x];
  };
  // A text's score against query i: the retrieved score when it was retrieved
  // (so a positive compares with the list exactly as ranked), else q·p.
  auto score_of = [&](std::size_t i, std::int64_t key) -> double {
    for (const auto& h : retrieved[i])
      if (pool.keys[static_cast<std::size_t>(h.index)] == key) return h.score;
    return row_dot(q_emb[static_cast<std::int64_t>(i)], vector_of(key));
  };

  io::JsonlWriter out(o.output);
  Rejects rejects(o.rejects);
  std::mt19937_64 rng(tool.common().seed);
  std::int64_t kept = 0, mined_total = 0, padded_total = 0;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i].group;
    const auto& gk = gkeys[i];
    const auto& hits = retrieved[i];
    std::vector<double> pos_scores;
    std::optional<double> anchor;
    if (need_anchor) {
      for (auto key : gk.pos) pos_scores.push_back(score_of(i, key));
      anchor = *std::max_element(pos_scores.begin(), pos_scores.end());
    }
    if (o.filter_topk) {
      auto check = ranking_consistency(hits, *anchor, *o.filter_topk);
      if (!check.keep) {
        io::RawFields extra;
        extra.add("positive_rank", std::to_string(check.positive_rank));
        extra.add("positive_score", num(*anchor));
        extra.add("threshold_score", num(hits[static_cast<std::size_t>(*o.filter_topk)].score));
        rejects.write(groups[i].raw, groups[i].where, "ranking_consistency", extra);
        progress.advance();
        continue;
      }
    }

    // Existing negatives: never one equal to the query or a positive; keep the first M.
    std::unordered_set<std::int64_t> excluded = {gk.query};
    for (auto key : gk.pos) excluded.insert(key);
    std::vector<std::size_t> keep_neg;
    if (o.existing == "keep") {
      for (std::size_t n = 0; n < g.neg.size() && static_cast<std::int64_t>(keep_neg.size()) < o.negatives; ++n)
        if (!excluded.count(gk.neg[n])) {
          excluded.insert(gk.neg[n]);
          keep_neg.push_back(n);
        }
    }
    const std::int64_t need = o.negatives - static_cast<std::int64_t>(keep_neg.size());
    Selection sel = select_negatives(hits, pool.keys, excluded, anchor, need, rules, rng);
    if (sel.short_dropped) {
      io::RawFields extra;
      extra.add("eligible", std::to_string(sel.eligible));
      extra.add("needed", std::to_string(need));
      rejects.write(groups[i].raw, groups[i].where, "shortfall", extra);
      progress.advance();
      continue;
    }

    const bool changed = keep_neg.size() != g.neg.size() || need > 0;
    std::vector<std::string> neg;
    std::vector<double> neg_scores;
    for (auto n : keep_neg) {
      neg.push_back(g.neg[n]);
      if (o.scores) neg_scores.push_back(score_of(i, gk.neg[n]));
    }
    auto add_row = [&](std::int64_t row) {
      neg.push_back(pool.texts[static_cast<std::size_t>(row)]);
      if (o.scores) neg_scores.push_back(score_of(i, pool.keys[static_cast<std::size_t>(row)]));
    };
    for (auto row : sel.mined) add_row(row);
    for (auto row : sel.padded) add_row(row);
    mined_total += static_cast<std::int64_t>(sel.mined.size());
    padded_total += static_cast<std::int64_t>(sel.padded.size());
    g.neg = std::move(neg);
    if (o.scores) {
      g.pos_scores = pos_scores;
      g.neg_scores = neg_scores;
    } else if (changed) {
      // Scores from another model no longer describe these negatives.
      g.pos_scores.clear();
      g.neg_scores.clear();
    }
    if (!sel.padded.empty()) g.extra.set("neg_padded", std::to_string(sel.padded.size()));
    out.write(g);
    ++kept;
    progress.advance();
  }

  out.finish();
  rejects.finish();
  write_meta(o, tool, max_length, n_groups, kept, rejects.counts(), n_pool, mined_total, padded_total);
  progress.finish(std::to_string(n_groups) + " groups: " + std::to_string(kept) + " kept, " +
                  std::to_string(rejects.total()) + " rejected" +
                  (rejects.total() ? " (" + counts_text(rejects.counts()) + ")" : std::string()) + "; " +
                  std::to_string(mined_total) + " negatives mined, " + std::to_string(padded_total) +
                  " padded from a pool of " + std::to_string(n_pool) + " in " +
                  cli::format_seconds(progress.elapsed_seconds()));
}

// ---- classification / clustering items -> groups (recipe §5.4) ---------------

struct LabelItem {
  io::CorpusRecord record;
  std::string label;  // raw JSON text of the label
  std::string raw;
  std::string where;
};

void mine_labels(const MineOptions& o, const cli::Tool& tool) {
  cli::Progress progress(tool.name(), "items", std::nullopt, tool.common().quiet);
  std::vector<LabelItem> items;
  for (const auto& path : input_list(o.inputs)) {
    io::JsonlReader reader(path);
    LabelItem item;
    while (reader.next(item.record)) {
      item.where = where(reader.name(), reader.line_number());
      if (!item.record.has_text) throw FormatError(item.where + ": --from-labels needs \"text\", not \"input_ids\"");
      const std::string* label = item.record.extra.find("label");
      if (!label || *label == "null") throw FormatError(item.where + ": missing field 'label'");
      item.label = *label;
      item.raw.assign(reader.line());
      items.push_back(item);
    }
  }
  const auto n = static_cast<std::int64_t>(items.size());

  TextKeys keys;
  std::vector<std::int64_t> item_keys;
  std::map<std::string, std::vector<std::int64_t>> by_label;  // label -> items, input order
  for (std::int64_t i = 0; i < n; ++i) {
    item_keys.push_back(keys.key(items[static_cast<std::size_t>(i)].record.text));
    by_label[items[static_cast<std::size_t>(i)].label].push_back(i);
  }
  // Items ordered by label, so "every item of another label" is two slices.
  std::vector<std::int64_t> order;
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> slice;
  for (const auto& [label, members] : by_label) {
    slice[label] = {static_cast<std::int64_t>(order.size()), static_cast<std::int64_t>(members.size())};
    order.insert(order.end(), members.begin(), members.end());
  }

  // Hardest negatives: per label, search its items' queries among every other item.
  std::vector<std::vector<std::int64_t>> ranked(static_cast<std::size_t>(n));  // item -> other-label items, best first
  std::optional<std::int64_t> max_length;
  if (!o.model.model.empty()) {
    TextEmbedder embedder(o.model);
    max_length = embedder.max_length();
    std::vector<std::string> texts, where_of;
    for (const auto& it : items) {
      texts.push_back(it.record.text);
      where_of.push_back(it.where);
    }
    const std::string prefix = o.instruction.empty() ? "" : encode::apply_instruction(o.instruction_template, o.instruction);
    torch::Tensor q = embedder.embed(texts, std::vector<std::string>(texts.size(), prefix), where_of);
    torch::Tensor p = embedder.embed(texts, {}, where_of);
    for (const auto& [label, members] : by_label) {
      std::vector<std::int64_t> others;
      for (auto j : order)
        if (items[static_cast<std::size_t>(j)].label != label) others.push_back(j);
      if (others.empty()) continue;
      auto idx_q = torch::tensor(members, torch::kInt64);
      auto idx_o = torch::tensor(others, torch::kInt64);
      // Slack beyond M for texts that equal the query or positive, or repeat.
      auto hits = retrieve(q.index_select(0, idx_q), p.index_select(0, idx_o), o.negatives + 16,
                           search_precision_of(o.model), search_device_of(o.model));
      for (std::size_t m = 0; m < members.size(); ++m)
        for (const auto& h : hits[m]) ranked[static_cast<std::size_t>(members[m])].push_back(others[static_cast<std::size_t>(h.index)]);
    }
  }

  const std::string type = o.label_type;
  io::JsonlWriter out(o.output);
  Rejects rejects(o.rejects);
  std::mt19937_64 rng(tool.common().seed);
  std::int64_t kept = 0, mined_total = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto& item = items[static_cast<std::size_t>(i)];
    const std::int64_t qkey = item_keys[static_cast<std::size_t>(i)];
    // Positive: a random other item of the same label with a different text.
    std::vector<std::int64_t> same;
    for (auto j : by_label[item.label])
      if (j != i && item_keys[static_cast<std::size_t>(j)] != qkey) same.push_back(j);
    if (same.empty()) {
      rejects.write(item.raw, item.where, "no_positive", {});
      progress.advance();
      continue;
    }
    const std::int64_t pos = same[uniform_index(rng, same.size())];
    std::unordered_set<std::int64_t> used = {qkey, item_keys[static_cast<std::size_t>(pos)]};
    std::vector<std::int64_t> negs;
    auto take = [&](std::int64_t j) {
      if (!used.insert(item_keys[static_cast<std::size_t>(j)]).second) return;
      negs.push_back(j);
    };
    if (!o.model.model.empty()) {
      for (auto j : ranked[static_cast<std::size_t>(i)]) {
        if (static_cast<std::int64_t>(negs.size()) >= o.negatives) break;
        take(j);
      }
    } else {
      const auto [start, count] = slice[item.label];
      const std::int64_t n_others = n - count;
      auto other_at = [&, start = start, count = count](std::int64_t r) {
        return order[static_cast<std::size_t>(r < start ? r : r + count)];
      };
      std::int64_t tries = 32 * o.negatives + 64;
      while (n_others > 0 && static_cast<std::int64_t>(negs.size()) < o.negatives && tries-- > 0)
        take(other_at(static_cast<std::int64_t>(uniform_index(rng, static_cast<std::uint64_t>(n_others)))));
      if (static_cast<std::int64_t>(negs.size()) < o.negatives) {
        // Few usable texts: enumerate them and draw the rest without replacement.
        std::vector<std::int64_t> rest;
        std::unordered_set<std::int64_t> rest_keys;
        for (std::int64_t r = 0; r < n_others; ++r) {
          const auto j = other_at(r);
          const auto key = item_keys[static_cast<std::size_t>(j)];
          if (!used.count(key) && rest_keys.insert(key).second) rest.push_back(j);
        }
        for (std::size_t s = 0; s < rest.size() && static_cast<std::int64_t>(negs.size()) < o.negatives; ++s) {
          std::swap(rest[s], rest[s + uniform_index(rng, rest.size() - s)]);
          take(rest[s]);
        }
      }
    }
    if (static_cast<std::int64_t>(negs.size()) < o.negatives) {
      io::RawFields extra;
      extra.add("eligible", std::to_string(negs.size()));
      extra.add("needed", std::to_string(o.negatives));
      rejects.write(item.raw, item.where, "shortfall", extra);
      progress.advance();
      continue;
    }
    io::TrainingGroup g;
    g.query = item.record.text;
    g.pos = {items[static_cast<std::size_t>(pos)].record.text};
    for (auto j : negs) g.neg.push_back(items[static_cast<std::size_t>(j)].record.text);
    if (!o.task.empty()) g.task = o.task;
    if (!o.instruction.empty()) g.instruction = o.instruction;
    g.type = *io::parse_task_type(type);
    if (item.record.has_id) {
      std::string id;
      io::append_json_string(id, item.record.id);
      g.extra.add("id", id);
    }
    g.extra.add("label", item.label);
    out.write(g);
    ++kept;
    mined_total += static_cast<std::int64_t>(negs.size());
    progress.advance();
  }
  out.finish();
  rejects.finish();
  write_meta(o, tool, max_length, n, kept, rejects.counts(), n, mined_total, 0);
  progress.finish(std::to_string(n) + " items: " + std::to_string(kept) + " groups, " +
                  std::to_string(rejects.total()) + " rejected" +
                  (rejects.total() ? " (" + counts_text(rejects.counts()) + ")" : std::string()) + " in " +
                  cli::format_seconds(progress.elapsed_seconds()));
}

}  // namespace

void add_mine_flags(cli::Tool& tool, MineOptions& o) {
  auto& app = tool.app();
  const char* kMining = "Mining";
  app.add_option("inputs", o.inputs, "Training groups (JSONL, plain or zstd); none or - = stdin")
      ->group(cli::kGroupInput);
  app.add_option("--corpus", o.corpus, "Candidate pool ({\"id\",\"text\"} JSONL); default: the groups' pos/neg texts")
      ->group(cli::kGroupInput);
  app.add_option("--query-embeddings", o.query_embeddings,
                 "Precomputed query embeddings (safetensors 'embeddings', one row per group)")
      ->group(cli::kGroupInput);
  app.add_option("--corpus-embeddings", o.corpus_embeddings,
                 "Precomputed pool embeddings (safetensors 'embeddings', one row per pool text)")
      ->group(cli::kGroupInput);
  app.add_flag("--from-labels", o.from_labels,
               "Input is {\"text\",\"label\"} items: build groups (pos: same label, neg: other labels)")
      ->group(cli::kGroupInput);
  app.add_option("--label-type", o.label_type, "type of --from-labels groups: classification or clustering")
      ->check(CLI::IsMember({"classification", "clustering"}))
      ->group(cli::kGroupInput);
  app.add_option("--task", o.task, "task name written into --from-labels groups")->group(cli::kGroupInput);
  app.add_option("-o,--output", o.output, "Output groups; - = stdout (.zst compresses)")->group(cli::kGroupOutput);
  app.add_option("--rejects", o.rejects, "Dropped groups with \"_reject\" (stage, reason, positive_rank)")
      ->group(cli::kGroupOutput);
  app.add_flag("--scores", o.scores, "Write pos_scores/neg_scores from the mining model")->group(cli::kGroupOutput);
  app.add_option("--range", o.range, "Rank window A-B to sample from (0-based, B exclusive; KaLM: 50-100)")
      ->group(kMining);
  app.add_option("--rank-basis", o.rank_basis,
                 "Count window ranks in the retrieved list (retrieved, KaLM) or after exclusions (eligible)")
      ->check(CLI::IsMember({"retrieved", "eligible"}))
      ->group(kMining);
  app.add_option("--negatives", o.negatives, "Negatives per output group (M)")
      ->check(cli::positive_number())
      ->group(kMining);
  app.add_option("--sampling", o.sampling, "random (seeded) or top (the highest-ranked in the window)")
      ->check(CLI::IsMember({"random", "top"}))
      ->group(kMining);
  app.add_option("--existing", o.existing, "Existing negatives: keep (first M, mine M - kept) or replace")
      ->check(CLI::IsMember({"keep", "replace"}))
      ->group(kMining);
  app.add_option("--max-score-ratio", o.max_score_ratio,
                 "Drop candidates scoring above RATIO x the best positive's score")
      ->group(kMining);
  app.add_option("--margin", o.margin, "Drop candidates scoring above the best positive's score - MARGIN")
      ->group(kMining);
  app.add_option("--filter-topk", o.filter_topk,
                 "Ranking-consistency filter: drop a group whose best positive scores below the hit at 0-based index K")
      ->group(kMining);
  app.add_option("--shortfall", o.shortfall, "Too few candidates: pad (random pool texts) or drop (to --rejects)")
      ->check(CLI::IsMember({"pad", "drop"}))
      ->group(kMining);
  encode::ModelFlagTargets model_flags;
  model_flags.model = &o.model.model;
  model_flags.model_help = "Mining model (Hugging Face directory with a tokenizer)";
  model_flags.instruction = &o.instruction;
  model_flags.instruction_help = "Query instruction for groups without an \"instruction\" field";
  model_flags.instruction_template = &o.instruction_template;
  model_flags.instruction_template_help = "How an instruction prefixes a query";
  model_flags.max_length = &o.model.max_length;
  model_flags.pooling = &o.model.pooling;
  model_flags.attention = &o.model.attention;
  encode::add_model_flags(app, model_flags);
  encode::add_compute_flags(app, o.model.batch_tokens, o.model.dtype, o.model.device);
  encode::add_search_precision_flag(app, o.model.search_precision);
}

void run_mine(const MineOptions& o, const cli::Tool& tool) {
  check_options(o);
  search::resolve_f32_products(search::F32Products::Auto);  // a bad KALM_SEARCH_BLAS fails before any work
  const io::OutputLock claim = MetaJson::claim_outputs(o.output, o.rejects, tool);
  if (o.from_labels)
    mine_labels(o, tool);
  else
    mine_groups(o, tool);
}

}  // namespace kalm::mine
