#include "kalm/eval/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "kalm/encode/embed_command.h"
#include "kalm/encode/engine.h"
#include "kalm/error.h"
#include "kalm/eval/bm25.h"
#include "kalm/eval/classifier.h"
#include "kalm/eval/embedding_metrics.h"
#include "kalm/eval/kmeans.h"
#include "kalm/eval/reranking_metrics.h"
#include "kalm/eval/retrieval_metrics.h"
#include "kalm/eval/tfidf.h"
#include "kalm/io/json_writer.h"
#include "kalm/search/topk.h"

namespace kalm::eval {
namespace {

using Clock = std::chrono::steady_clock;

class Stopwatch {
 public:
  explicit Stopwatch(double& into) : into_(into), start_(Clock::now()) {}
  ~Stopwatch() { into_ += std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  double& into_;
  Clock::time_point start_;
};

std::string query_prefix(const TaskSpec& spec, const RunnerOptions& o) {
  if (!o.use_instructions || spec.instruction.empty()) return "";
  return encode::apply_instruction(o.instruction_template, spec.instruction);
}

std::vector<std::string> prefixed(const std::string& prefix, const std::vector<std::string>& texts) {
  std::vector<std::string> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.push_back(prefix + t);
  return out;
}

std::vector<std::int64_t> resolve_dims(const RunnerOptions& o, std::int64_t width) {
  if (o.dims.empty()) return {width};
  for (auto d : o.dims)
    if (d < 1 || d > width)
      throw UsageError("--dim " + std::to_string(d) + " is outside [1, " + std::to_string(width) +
                       "] (the embeddings' width)");
  return o.dims;
}

torch::Tensor at_dim(const torch::Tensor& pooled, std::int64_t dim) {
  return encode::finalize_embeddings(pooled, dim, /*normalize=*/true);
}

const std::vector<std::string>& splits_of(const TaskSpec& spec, const RunnerOptions& o) {
  return o.splits.empty() ? spec.splits : o.splits;
}

void set_main(const TaskSpec& spec, Metrics& metrics, double& main) {
  main = metric_value(metrics, spec.main_score);
}

// mteb's retrieval keys from trec_eval's measure names.
Metrics retrieval_metrics(const RetrievalEvaluation& ev) {
  Metrics m;
  const std::pair<const char*, const char*> families[] = {{"ndcg_at_", "ndcg_cut_"},  {"map_at_", "map_cut_"},
                                                          {"recall_at_", "recall_"},  {"precision_at_", "P_"},
                                                          {"mrr_at_", "mrr_at_"},     {"hit_rate_at_", "success_"}};
  for (const auto& [ours, trec] : families)
    for (int k : kMtebCutoffs) m.emplace_back(ours + std::to_string(k), ev.mean(trec + std::to_string(k)));
  m.emplace_back("map", ev.mean("map"));
  m.emplace_back("num_queries", static_cast<double>(ev.query_ids.size()));
  return m;
}

Metrics retrieval_bm25(const RetrievalData& data, const std::vector<std::size_t>& queries, std::int64_t k) {
  Bm25Index index(data.corpus_texts);
  std::vector<std::string> texts;
  for (auto q : queries) texts.push_back(data.query_texts[q]);
  auto hits = index.search_all(texts, static_cast<std::size_t>(k));
  Run run;
  for (std::size_t i = 0; i < queries.size(); ++i) {
    auto& docs = run[data.query_ids[queries[i]]];  // present even without hits: it scores 0, not skipped
    for (const auto& h : hits[i]) docs[data.corpus_ids[h.doc]] = h.score;
  }
  return retrieval_metrics(evaluate_retrieval(data.qrels, run));
}

// The rows of queries.jsonl that the split's qrels judge.
std::vector<std::size_t> judged_queries(const RetrievalData& data) {
  std::vector<std::size_t> rows;
  for (std::size_t i = 0; i < data.query_ids.size(); ++i)
    if (data.qrels.count(data.query_ids[i])) rows.push_back(i);
  return rows;
}

SplitResult score_retrieval(const TaskSpec& spec, const RetrievalData& data, const std::vector<std::size_t>& queries,
                            const torch::Tensor& query_pooled, const torch::Tensor& corpus_pooled,
                            const std::vector<std::int64_t>& dims, const RunnerOptions& o, TaskTiming& timing) {
  SplitResult split;
  const std::int64_t k = std::min<std::int64_t>(o.top_k, corpus_pooled.size(0));
  for (auto d : dims) {
    DimResult r;
    r.dim = d;
    search::TopKResult top;
    {
      Stopwatch w(timing.search);
      search::TopKOptions so;
      so.k = k;
      so.precision = o.search_precision;
      top = search::exact_topk(at_dim(query_pooled, d).to(o.search_device), at_dim(corpus_pooled, d), so);
    }
    Stopwatch w(timing.metrics);
    Run run;
    auto scores = top.scores.accessor<float, 2>();
    auto idx = top.indices.accessor<std::int64_t, 2>();
    for (std::size_t i = 0; i < queries.size(); ++i) {
      auto& docs = run[data.query_ids[queries[i]]];
      docs.reserve(static_cast<std::size_t>(top.indices.size(1)));
      for (std::int64_t j = 0; j < top.indices.size(1); ++j)
        docs[data.corpus_ids[static_cast<std::size_t>(idx[static_cast<std::int64_t>(i)][j])]] =
            scores[static_cast<std::int64_t>(i)][j];
    }
    r.metrics = retrieval_metrics(evaluate_retrieval(data.qrels, run));
    set_main(spec, r.metrics, r.main_score);
    split.dims.push_back(std::move(r));
  }
  if (o.bm25) {
    Stopwatch w(timing.bm25);
    split.bm25 = retrieval_bm25(data, queries, k);
    split.bm25_main_score = metric_value(*split.bm25, spec.main_score);
  }
  return split;
}

Metrics pair_metrics(const PairClassificationReport& r) {
  Metrics m;
  const std::pair<const char*, const PairClassificationScores*> fns[] = {
      {"cosine", &r.cosine}, {"dot", &r.dot}, {"euclidean", &r.euclidean}, {"manhattan", &r.manhattan}};
  for (const auto& [name, s] : fns) {
    const std::string p = name;
    m.emplace_back(p + "_accuracy", s->accuracy);
    m.emplace_back(p + "_accuracy_threshold", s->accuracy_threshold);
    m.emplace_back(p + "_f1", s->f1);
    m.emplace_back(p + "_f1_threshold", s->f1_threshold);
    m.emplace_back(p + "_precision", s->precision);
    m.emplace_back(p + "_recall", s->recall);
    m.emplace_back(p + "_ap", s->ap);
  }
  m.emplace_back("max_accuracy", r.max_accuracy);
  m.emplace_back("max_f1", r.max_f1);
  m.emplace_back("max_precision", r.max_precision);
  m.emplace_back("max_recall", r.max_recall);
  m.emplace_back("max_ap", r.max_ap);
  return m;
}

// Embeds two lists, each text prefixed with its list's prompt, in one encoder
// call where the prompts agree (better batches), and splits the result.
std::pair<torch::Tensor, torch::Tensor> encode_two(TextEncoder& enc, const std::string& prompt_a,
                                                   const std::vector<std::string>& a, const std::string& prompt_b,
                                                   const std::vector<std::string>& b, const std::string& what) {
  if (prompt_a != prompt_b)
    return {enc.encode(prefixed(prompt_a, a), what, prompt_a), enc.encode(prefixed(prompt_b, b), what, prompt_b)};
  std::vector<std::string> all = prefixed(prompt_a, a);
  for (const auto& t : b) all.push_back(prompt_b + t);
  torch::Tensor e = enc.encode(all, what, prompt_a);
  const auto n = static_cast<std::int64_t>(a.size());
  return {e.narrow(0, 0, n), e.narrow(0, n, e.size(0) - n)};
}

std::string split_path(const TaskSpec& spec, const std::string& split) { return spec.dir + "/" + split + ".jsonl"; }

// A task whose texts all carry one label is scored perfect by any model.
void require_two_labels(const std::vector<std::int64_t>& labels, const std::string& file, const char* kind) {
  if (labels.empty()) return;  // an empty split is refused where it is read
  for (auto label : labels)
    if (label != labels.front()) return;
  throw FormatError(file + ": every text has the same label; " + kind +
                    " needs at least two labels (a single one would score 100 whatever the model)");
}

SplitResult run_split(const TaskSpec& spec, const std::string& split_name, TextEncoder& enc, const RunnerOptions& o,
                      TaskTiming& timing) {
  const std::string prefix = query_prefix(spec, o);
  if (enc.dim() > 0) resolve_dims(o, enc.dim());  // a bad --dim fails before anything is embedded
  SplitResult split;
  split.split = split_name;
  auto add = [&](std::int64_t d, Metrics m) {
    DimResult r;
    r.dim = d;
    r.metrics = std::move(m);
    set_main(spec, r.metrics, r.main_score);
    split.dims.push_back(std::move(r));
  };

  switch (spec.type) {
    case TaskKind::kRetrieval: {
      RetrievalData data;
      {
        Stopwatch w(timing.load);
        data = load_retrieval(spec, split_name);
      }
      auto queries = judged_queries(data);
      std::vector<std::string> qtexts;
      for (auto q : queries) qtexts.push_back(prefix + data.query_texts[q]);
      torch::Tensor qe, ce;
      {
        Stopwatch w(timing.encode);
        qe = enc.encode(qtexts, spec.dir + "/queries.jsonl", prefix);
        ce = enc.encode(data.corpus_texts, spec.dir + "/corpus.jsonl", "");
      }
      SplitResult r = score_retrieval(spec, data, queries, qe, ce, resolve_dims(o, qe.size(1)), o, timing);
      r.split = split_name;
      return r;
    }
    case TaskKind::kReranking: {
      std::vector<RerankingSample> samples;
      {
        Stopwatch w(timing.load);
        samples = load_reranking(spec, split_name);
      }
      std::vector<std::string> docs;
      std::unordered_map<std::string, std::size_t> doc_row;
      auto row_of = [&](const std::string& d) {
        auto [it, fresh] = doc_row.emplace(d, docs.size());
        if (fresh) docs.push_back(d);
        return it->second;
      };
      std::vector<std::vector<std::size_t>> pos(samples.size()), neg(samples.size());
      std::vector<std::string> queries;
      for (std::size_t i = 0; i < samples.size(); ++i) {
        queries.push_back(prefix + samples[i].query);
        for (const auto& p : samples[i].positive) pos[i].push_back(row_of(p));
        for (const auto& n : samples[i].negative) neg[i].push_back(row_of(n));
      }
      torch::Tensor qe, de;
      {
        Stopwatch w(timing.encode);
        qe = enc.encode(queries, split_path(spec, split_name) + " (queries)", prefix);
        de = enc.encode(docs, split_path(spec, split_name) + " (candidates)", "");
      }
      for (auto d : resolve_dims(o, qe.size(1))) {
        torch::Tensor sim;
        {
          Stopwatch w(timing.search);
          sim = at_dim(qe, d).mm(at_dim(de, d).t()).to(torch::kFloat64).contiguous();
        }
        Stopwatch w(timing.metrics);
        auto acc = sim.accessor<double, 2>();
        std::vector<RerankingInstance> inst(samples.size());
        for (std::size_t i = 0; i < samples.size(); ++i) {
          for (auto p : pos[i]) inst[i].positive_scores.push_back(acc[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(p)]);
          for (auto n : neg[i]) inst[i].negative_scores.push_back(acc[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(n)]);
        }
        auto s = reranking_scores(inst, 10);
        add(d, {{"map", s.map}, {"mrr_at_10", s.mrr}, {"num_evaluated", static_cast<double>(s.evaluated)}});
      }
      if (o.bm25) {
        Stopwatch w(timing.bm25);
        Bm25Index index(docs);
        std::vector<RerankingInstance> inst(samples.size());
        for (std::size_t i = 0; i < samples.size(); ++i) {
          inst[i].positive_scores = index.score(samples[i].query, pos[i]);
          inst[i].negative_scores = index.score(samples[i].query, neg[i]);
        }
        auto s = reranking_scores(inst, 10);
        split.bm25 = Metrics{{"map", s.map}, {"mrr_at_10", s.mrr}, {"num_evaluated", static_cast<double>(s.evaluated)}};
        split.bm25_main_score = metric_value(*split.bm25, spec.main_score);
      }
      return split;
    }
    case TaskKind::kSts:
    case TaskKind::kPairClassification:
    case TaskKind::kBitext: {
      PairData data;
      {
        Stopwatch w(timing.load);
        data = load_pairs(spec, split_name);
      }
      const std::string second_prefix = spec.instruction_both_sides ? prefix : "";
      torch::Tensor a, b;
      {
        Stopwatch w(timing.encode);
        std::tie(a, b) = encode_two(enc, prefix, data.first, second_prefix, data.second, split_path(spec, split_name));
      }
      for (auto d : resolve_dims(o, a.size(1))) {
        torch::Tensor ad = at_dim(a, d), bd = at_dim(b, d);
        Stopwatch w(timing.metrics);
        if (spec.type == TaskKind::kSts) {
          auto s = sts_scores(ad, bd, data.scores);
          add(d, {{"cosine_pearson", s.cosine_pearson},
                  {"cosine_spearman", s.cosine_spearman},
                  {"manhattan_pearson", s.manhattan_pearson},
                  {"manhattan_spearman", s.manhattan_spearman},
                  {"euclidean_pearson", s.euclidean_pearson},
                  {"euclidean_spearman", s.euclidean_spearman},
                  {"pearson", s.pearson},
                  {"spearman", s.spearman}});
        } else if (spec.type == TaskKind::kPairClassification) {
          add(d, pair_metrics(pair_classification(ad, bd, data.labels)));
        } else {
          auto s = bitext_mining(ad, bd).scores;
          add(d, {{"f1", s.f1}, {"precision", s.precision}, {"recall", s.recall}, {"accuracy", s.accuracy}});
        }
      }
      return split;
    }
    case TaskKind::kClassification: {
      LabelIds labels;
      LabeledTexts train, test;
      {
        Stopwatch w(timing.load);
        train = load_labeled(spec, spec.train_split, labels);
        test = load_labeled(spec, split_name, labels);
      }
      // One label makes every prediction right: a score of 100 that measures nothing.
      require_two_labels(train.labels, split_path(spec, spec.train_split), "classification");
      torch::Tensor tr, te;
      {
        Stopwatch w(timing.encode);
        std::tie(tr, te) = encode_two(enc, prefix, train.texts, prefix, test.texts,
                                      split_path(spec, spec.train_split) + " + " + split_path(spec, split_name));
      }
      for (auto d : resolve_dims(o, tr.size(1))) {
        Stopwatch w(timing.metrics);
        ClassificationProtocol p;
        p.n_experiments = spec.n_experiments;
        p.samples_per_label = spec.samples_per_label;
        p.seed = o.seed;
        auto r = classification_experiments(at_dim(tr, d), train.labels, at_dim(te, d), test.labels, p);
        const auto& s = r.mean;
        add(d, {{"accuracy", s.accuracy},
                {"f1", s.f1},
                {"f1_weighted", s.f1_weighted},
                {"precision", s.precision},
                {"precision_weighted", s.precision_weighted},
                {"recall", s.recall},
                {"recall_weighted", s.recall_weighted}});
      }
      return split;
    }
    case TaskKind::kClustering: {
      std::vector<LabeledTexts> sets;
      {
        Stopwatch w(timing.load);
        sets = load_clustering(spec, split_name);
      }
      for (const auto& set : sets) require_two_labels(set.labels, split_path(spec, split_name), "clustering");
      std::vector<std::string> all;
      for (const auto& s : sets)
        for (const auto& t : s.texts) all.push_back(prefix + t);
      torch::Tensor e;
      {
        Stopwatch w(timing.encode);
        e = enc.encode(all, split_path(spec, split_name), prefix);
      }
      for (auto d : resolve_dims(o, e.size(1))) {
        Stopwatch w(timing.metrics);
        torch::Tensor ed = at_dim(e, d);
        std::vector<double> v;
        std::int64_t offset = 0;
        for (const auto& s : sets) {
          const auto n = static_cast<std::int64_t>(s.texts.size());
          v.push_back(clustering_v_measure(ed.narrow(0, offset, n), s.labels, spec.batch_size, o.seed));
          offset += n;
        }
        double mean = 0, var = 0;
        for (double x : v) mean += x;
        mean /= static_cast<double>(v.size());
        for (double x : v) var += (x - mean) * (x - mean);
        add(d, {{"v_measure", mean},
                {"v_measure_std", std::sqrt(var / static_cast<double>(v.size()))},
                {"num_sets", static_cast<double>(v.size())}});
      }
      return split;
    }
  }
  throw InternalError("unknown task type");
}

void append_key(std::string& out, const std::string& key) {
  io::append_json_string(out, key);
  out += ": ";
}
void append_value(std::string& out, double v) {
  if (std::isfinite(v)) io::append_json_number(out, v);
  else out += "null";
}
void append_strings(std::string& out, const std::vector<std::string>& v) {
  out += '[';
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    io::append_json_string(out, v[i]);
  }
  out += ']';
}
void append_metrics(std::string& out, const Metrics& m, const std::string& indent) {
  for (const auto& [k, v] : m) {
    out += ",\n" + indent;
    append_key(out, k);
    append_value(out, v);
  }
}

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}
std::string score_text(double v) {
  if (!std::isfinite(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", 100.0 * v);
  return buf;
}

// TF-IDF vectors as a TextEncoder: fitted on each list it is given, which
// run_split passes whole (one encode call per split without instructions).
class TfidfEncoder : public TextEncoder {
 public:
  explicit TfidfEncoder(TfidfFeatures features) : features_(features) {}
  torch::Tensor encode(const std::vector<std::string>& texts, const std::string& what, const std::string&) override {
    const std::int64_t budget = (std::int64_t{1} << 27) / std::max<std::int64_t>(1, static_cast<std::int64_t>(texts.size()));
    auto v = tfidf_vectors(texts, features_, std::clamp<std::int64_t>(budget, 1, 65536), what);
    width_ = v.size(1);
    return v;
  }
  std::int64_t dim() const override { return 0; }
  std::int64_t width() const { return width_; }

 private:
  TfidfFeatures features_;
  std::int64_t width_ = 0;
};

// The split's lexical baseline for the types that compare vectors (see runner.h).
void add_tfidf_baseline(const TaskSpec& spec, SplitResult& split, const RunnerOptions& o, TaskTiming& timing) {
  const auto start = Clock::now();
  TfidfEncoder tfidf(spec.type == TaskKind::kBitext ? TfidfFeatures::kCharTrigrams : TfidfFeatures::kWords);
  RunnerOptions plain = o;
  plain.dims.clear();
  plain.use_instructions = false;
  TaskTiming ignored;
  SplitResult b = run_split(spec, split.split, tfidf, plain, ignored);
  split.tfidf = b.dims.at(0).metrics;
  split.tfidf_main_score = b.dims.at(0).main_score;
  split.tfidf_width = tfidf.width();
  split.tfidf_features = std::string(tfidf_features_name(spec.type == TaskKind::kBitext ? TfidfFeatures::kCharTrigrams
                                                                                       : TfidfFeatures::kWords));
  timing.tfidf += std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

double metric_value(const Metrics& metrics, const std::string& name) {
  for (const auto& [k, v] : metrics)
    if (k == name) return v;
  std::string known;
  for (const auto& [k, v] : metrics) known += (known.empty() ? "" : ", ") + k;
  throw UsageError("main_score '" + name + "' is not a metric of this task (available: " + known + ")");
}

TaskResult run_task(const TaskSpec& spec, TextEncoder& encoder, const RunnerOptions& options) {
  const auto start = Clock::now();
  TaskResult result;
  result.spec = spec;
  for (const auto& split : splits_of(spec, options)) {
    result.splits.push_back(run_split(spec, split, encoder, options, result.timing));
    if (options.bm25 && spec.type != TaskKind::kRetrieval && spec.type != TaskKind::kReranking)
      add_tfidf_baseline(spec, result.splits.back(), options, result.timing);
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

TaskResult run_retrieval_with_embeddings(const TaskSpec& spec, const torch::Tensor& query_embeddings,
                                         const torch::Tensor& corpus_embeddings, const RunnerOptions& options) {
  if (spec.type != TaskKind::kRetrieval)
    throw UsageError("precomputed embeddings are supported for retrieval tasks only; " + spec.dir + " is " +
                     std::string(task_kind_name(spec.type)));
  auto check = [](const torch::Tensor& t, const char* what) {
    if (!t.defined() || t.dim() != 2 || !t.is_floating_point())
      throw FormatError(std::string(what) + ": expected a 2-D floating-point [N, D] tensor");
  };
  check(query_embeddings, "--query-embeddings");
  check(corpus_embeddings, "--corpus-embeddings");
  if (query_embeddings.size(1) != corpus_embeddings.size(1))
    throw FormatError("query embeddings have width " + std::to_string(query_embeddings.size(1)) +
                      ", corpus embeddings " + std::to_string(corpus_embeddings.size(1)));
  const auto start = Clock::now();
  TaskResult result;
  result.spec = spec;
  const auto dims = resolve_dims(options, query_embeddings.size(1));
  for (const auto& split_name : splits_of(spec, options)) {
    RetrievalData data;
    {
      Stopwatch w(result.timing.load);
      data = load_retrieval(spec, split_name);
    }
    if (static_cast<std::size_t>(query_embeddings.size(0)) != data.query_ids.size())
      throw FormatError("--query-embeddings has " + std::to_string(query_embeddings.size(0)) + " rows but " + spec.dir +
                        "/queries.jsonl has " + std::to_string(data.query_ids.size()) + " queries");
    if (static_cast<std::size_t>(corpus_embeddings.size(0)) != data.corpus_ids.size())
      throw FormatError("--corpus-embeddings has " + std::to_string(corpus_embeddings.size(0)) + " rows but " +
                        spec.dir + "/corpus.jsonl has " + std::to_string(data.corpus_ids.size()) + " documents");
    auto queries = judged_queries(data);
    std::vector<std::int64_t> rows(queries.begin(), queries.end());
    torch::Tensor q = query_embeddings.to(torch::kCPU, torch::kFloat32).index_select(0, torch::tensor(rows, torch::kInt64));
    torch::Tensor c = corpus_embeddings.to(torch::kCPU, torch::kFloat32);
    SplitResult r = score_retrieval(spec, data, queries, q, c, dims, options, result.timing);
    r.split = split_name;
    result.splits.push_back(std::move(r));
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

std::string task_result_json(const TaskResult& r, const ResultMeta& meta) {
  std::string out = "{\n  ";
  append_key(out, "task_name");
  io::append_json_string(out, r.spec.name);
  out += ",\n  ";
  // The two keys mteb's TaskResult requires beside those below, so that
  // mteb.TaskResult.from_disk loads this file: a kalm task is a local
  // directory (no dataset revision), and no mteb version computed it.
  append_key(out, "dataset_revision");
  io::append_json_string(out, "local");
  out += ",\n  ";
  append_key(out, "mteb_version");
  out += "null,\n  ";
  append_key(out, "task_type");
  io::append_json_string(out, std::string(task_kind_name(r.spec.type)));
  out += ",\n  ";
  append_key(out, "model");
  io::append_json_string(out, meta.model);
  out += ",\n  ";
  append_key(out, "kalm_version");
  io::append_json_string(out, meta.kalm_version);
  out += ",\n  ";
  append_key(out, "command");
  io::append_json_string(out, meta.command);
  out += ",\n  ";
  append_key(out, "max_length");
  out += meta.max_length ? std::to_string(*meta.max_length) : "null";
  out += ",\n  ";
  append_key(out, "main_metric");
  io::append_json_string(out, r.spec.main_score);
  out += ",\n  ";
  append_key(out, "dims");
  out += '[';
  if (!r.splits.empty())
    for (std::size_t i = 0; i < r.splits[0].dims.size(); ++i) {
      if (i) out += ", ";
      out += std::to_string(r.splits[0].dims[i].dim);
    }
  out += "],\n  ";
  append_key(out, "evaluation_time");
  append_value(out, r.seconds);
  out += ",\n  ";
  append_key(out, "timing");
  out += "{";
  const std::pair<const char*, double> timings[] = {{"load", r.timing.load},
                                                    {"encode", r.timing.encode},
                                                    {"search", r.timing.search},
                                                    {"metrics", r.timing.metrics},
                                                    {"bm25", r.timing.bm25},
                                                    {"tfidf", r.timing.tfidf}};
  for (std::size_t i = 0; i < std::size(timings); ++i) {
    if (i) out += ", ";
    append_key(out, timings[i].first);
    append_value(out, timings[i].second);
  }
  out += "},\n  ";
  auto header = [&](const SplitResult& s, const std::string& indent) {
    out += indent;
    append_key(out, "split");
    io::append_json_string(out, s.split);
    out += ",\n" + indent;
    append_key(out, "hf_subset");
    out += "\"default\",\n" + indent;
    append_key(out, "languages");
    append_strings(out, r.spec.languages);
  };
  append_key(out, "scores");
  out += "{";
  for (std::size_t si = 0; si < r.splits.size(); ++si) {
    const auto& s = r.splits[si];
    out += si ? ",\n    " : "\n    ";
    append_key(out, s.split);
    out += "[";
    for (std::size_t di = 0; di < s.dims.size(); ++di) {
      const auto& d = s.dims[di];
      out += di ? ", {\n" : "{\n";
      const std::string indent = "      ";
      out += indent;
      append_key(out, "dim");
      out += std::to_string(d.dim) + ",\n";
      header(s, indent);
      out += ",\n" + indent;
      append_key(out, "main_score");
      append_value(out, d.main_score);
      append_metrics(out, d.metrics, indent);
      out += "\n    }";
    }
    out += "]";
  }
  out += "\n  }";
  // A baseline's section: one object per split that has it; `extra` writes
  // keys of its own before the main score.
  auto baseline_section = [&](const char* key, auto has, auto main_score, auto metrics, auto extra) {
    bool first = true;
    for (const auto& s : r.splits) {
      if (!has(s)) continue;
      out += first ? ",\n  " : ",\n    ";
      if (first) {
        append_key(out, key);
        out += "{\n    ";
      }
      first = false;
      append_key(out, s.split);
      out += "{\n";
      const std::string indent = "      ";
      header(s, indent);
      extra(s, indent);
      out += ",\n" + indent;
      append_key(out, "main_score");
      append_value(out, main_score(s));
      append_metrics(out, metrics(s), indent);
      out += "\n    }";
    }
    if (!first) out += "\n  }";
  };
  baseline_section(
      "bm25", [](const SplitResult& s) { return s.bm25.has_value(); },
      [](const SplitResult& s) { return s.bm25_main_score; }, [](const SplitResult& s) -> const Metrics& { return *s.bm25; },
      [](const SplitResult&, const std::string&) {});
  baseline_section(
      "tfidf", [](const SplitResult& s) { return s.tfidf.has_value(); },
      [](const SplitResult& s) { return s.tfidf_main_score; }, [](const SplitResult& s) -> const Metrics& { return *s.tfidf; },
      [&](const SplitResult& s, const std::string& indent) {
        out += ",\n" + indent;
        append_key(out, "features");
        io::append_json_string(out, s.tfidf_features);
        out += ",\n" + indent;
        append_key(out, "width");
        out += std::to_string(s.tfidf_width);
      });
  out += "\n}\n";
  return out;
}

std::string results_table(const std::vector<TaskResult>& results) {
  std::vector<std::int64_t> dims;
  bool any_bm25 = false, any_tfidf = false;
  for (const auto& r : results)
    for (const auto& s : r.splits) {
      for (const auto& d : s.dims)
        if (std::find(dims.begin(), dims.end(), d.dim) == dims.end()) dims.push_back(d.dim);
      any_bm25 = any_bm25 || s.bm25.has_value();
      any_tfidf = any_tfidf || s.tfidf.has_value();
    }
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"task", "type", "split", "metric"};
  for (auto d : dims) head.push_back("dim=" + std::to_string(d));
  if (any_bm25) head.push_back("bm25");
  if (any_tfidf) head.push_back("tfidf");
  rows.push_back(head);
  for (const auto& r : results)
    for (const auto& s : r.splits) {
      std::vector<std::string> row = {r.spec.name, std::string(task_kind_name(r.spec.type)), s.split, r.spec.main_score};
      for (auto d : dims) {
        std::string cell = "-";
        for (const auto& x : s.dims)
          if (x.dim == d) cell = score_text(x.main_score);
        row.push_back(cell);
      }
      if (any_bm25) row.push_back(s.bm25 ? score_text(s.bm25_main_score) : "-");
      if (any_tfidf) row.push_back(s.tfidf ? score_text(s.tfidf_main_score) : "-");
      rows.push_back(row);
    }
  std::vector<std::size_t> width(head.size(), 0);
  for (const auto& row : rows)
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      if (c) line += "  ";
      line += c + 1 == row.size() ? row[c] : pad(row[c], width[c]);
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace kalm::eval
