#include "kalm/eval/retrieval_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kalm/error.h"

namespace kalm::eval {

namespace {

// trec_eval's codes for retrieved docs that carry no usable judgement.
constexpr std::int64_t kRelNonPool = -1;
constexpr std::int64_t kRelUnjudged = -2;

std::vector<int> checked_cutoffs(std::vector<int> cutoffs, const char* what) {
  for (int k : cutoffs)
    if (k <= 0)
      throw UsageError(std::string("retrieval evaluation: ") + what + " cutoff " +
                       std::to_string(k) + " must be positive");
  std::sort(cutoffs.begin(), cutoffs.end());
  if (std::adjacent_find(cutoffs.begin(), cutoffs.end()) != cutoffs.end())
    throw UsageError(std::string("retrieval evaluation: duplicate ") + what + " cutoffs");
  return cutoffs;
}

struct CheckedOptions {
  std::vector<int> cutoffs;
  std::vector<int> mrr_cutoffs;
  std::int64_t relevance_level;
};

CheckedOptions check(const RetrievalOptions& options) {
  if (options.relevance_level < 1)
    throw UsageError("retrieval evaluation: relevance level " +
                     std::to_string(options.relevance_level) +
                     " must be >= 1 (as in pytrec_eval)");
  return {checked_cutoffs(options.cutoffs, "measure"),
          checked_cutoffs(options.mrr_cutoffs, "mrr"), options.relevance_level};
}

std::vector<std::string> names_for(const CheckedOptions& o) {
  std::vector<std::string> names = {"num_ret", "num_rel", "num_rel_ret", "map"};
  for (int k : o.cutoffs) names.push_back("map_cut_" + std::to_string(k));
  for (int k : o.cutoffs) names.push_back("ndcg_cut_" + std::to_string(k));
  for (int k : o.cutoffs) names.push_back("P_" + std::to_string(k));
  for (int k : o.cutoffs) names.push_back("recall_" + std::to_string(k));
  names.push_back("recip_rank");
  for (int k : o.cutoffs) names.push_back("success_" + std::to_string(k));
  for (int k : o.mrr_cutoffs) names.push_back("mrr_at_" + std::to_string(k));
  return names;
}

struct Doc {
  const std::string* id;
  double score;
};

// Orders by score descending, then doc id descending (trec_eval's comp_sim_docno
// returns strcmp(doc2, doc1) on ties). std::string::compare is a byte compare,
// the same as strcmp on ids without NUL bytes.
template <typename Key>
void rank_docs(std::vector<Doc>& docs, Key key) {
  std::sort(docs.begin(), docs.end(), [&](const Doc& a, const Doc& b) {
    const auto ka = key(a.score), kb = key(b.score);
    if (ka != kb) return ka > kb;
    return *a.id > *b.id;
  });
}

std::vector<double> evaluate_one(const std::unordered_map<std::string, std::int64_t>& judgements,
                                 std::vector<Doc> docs, const CheckedOptions& o,
                                 std::size_t num_measures) {
  // trec_eval 9.0.8 (and so pytrec_eval) stores scores as C float before
  // sorting: scores equal in float32 tie and fall to the doc-id rule. mteb's
  // MRR sorts Python floats (doubles), so it gets its own order below.
  rank_docs(docs, [](double s) { return static_cast<float>(s); });

  const std::size_t n = docs.size();
  std::vector<std::int64_t> rel(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto it = judgements.find(*docs[i].id);
    rel[i] = it == judgements.end() ? kRelNonPool : (it->second < 0 ? kRelUnjudged : it->second);
  }

  std::int64_t num_rel = 0;
  std::vector<std::int64_t> ideal_gains;
  for (const auto& [doc, value] : judgements) {
    if (value >= o.relevance_level) ++num_rel;
    if (value > 0) ideal_gains.push_back(value);
  }
  std::sort(ideal_gains.begin(), ideal_gains.end(), std::greater<>());

  // Prefix sums in rank order, accumulated in the same order as trec_eval's loops.
  std::vector<std::int64_t> rel_prefix(n + 1, 0);
  std::vector<double> ap_prefix(n + 1, 0.0), dcg_prefix(n + 1, 0.0);
  std::int64_t first_rel_rank = 0;  // 1-based; 0 = none
  for (std::size_t i = 0; i < n; ++i) {
    const bool relevant = rel[i] >= o.relevance_level;
    rel_prefix[i + 1] = rel_prefix[i] + (relevant ? 1 : 0);
    ap_prefix[i + 1] = ap_prefix[i];
    if (relevant) {
      ap_prefix[i + 1] += static_cast<double>(rel_prefix[i + 1]) / static_cast<double>(i + 1);
      if (first_rel_rank == 0) first_rel_rank = static_cast<std::int64_t>(i + 1);
    }
    dcg_prefix[i + 1] = dcg_prefix[i];
    if (rel[i] > 0)
      dcg_prefix[i + 1] += static_cast<double>(rel[i]) / std::log2(static_cast<double>(i + 2));
  }
  std::vector<double> ideal_prefix(ideal_gains.size() + 1, 0.0);
  for (std::size_t i = 0; i < ideal_gains.size(); ++i)
    ideal_prefix[i + 1] =
        ideal_prefix[i] + static_cast<double>(ideal_gains[i]) / std::log2(static_cast<double>(i + 2));

  const auto at = [](std::size_t k, std::size_t size) { return std::min(k, size); };
  const double num_rel_d = static_cast<double>(num_rel);

  std::vector<double> v;
  v.reserve(num_measures);
  v.push_back(static_cast<double>(n));
  v.push_back(num_rel_d);
  v.push_back(static_cast<double>(rel_prefix[n]));
  v.push_back(rel_prefix[n] > 0 ? ap_prefix[n] / num_rel_d : 0.0);
  for (int k : o.cutoffs)
    v.push_back(num_rel == 0 ? 0.0 : ap_prefix[at(k, n)] / num_rel_d);
  for (int k : o.cutoffs) {
    const double dcg = dcg_prefix[at(k, n)];
    const double ideal = ideal_prefix[at(k, ideal_gains.size())];
    v.push_back(ideal > 0.0 ? dcg / ideal : dcg);
  }
  for (int k : o.cutoffs)
    v.push_back(static_cast<double>(rel_prefix[at(k, n)]) / static_cast<double>(k));
  for (int k : o.cutoffs)
    v.push_back(num_rel == 0 ? 0.0 : static_cast<double>(rel_prefix[at(k, n)]) / num_rel_d);
  v.push_back(first_rel_rank ? 1.0 / static_cast<double>(first_rel_rank) : 0.0);
  for (int k : o.cutoffs) v.push_back(rel_prefix[at(k, n)] > 0 ? 1.0 : 0.0);

  // mteb's MRR: the same tie rule on the unrounded scores. The order only differs
  // from trec_eval's when two scores collide in float32, so re-sort only then.
  bool float_exact = true;
  for (const Doc& d : docs)
    if (static_cast<double>(static_cast<float>(d.score)) != d.score) {
      float_exact = false;
      break;
    }
  std::int64_t mteb_first = first_rel_rank;
  if (!float_exact) {
    rank_docs(docs, [](double s) { return s; });
    mteb_first = 0;
    for (std::size_t i = 0; i < n; ++i) {
      auto it = judgements.find(*docs[i].id);
      if (it != judgements.end() && it->second >= o.relevance_level) {
        mteb_first = static_cast<std::int64_t>(i + 1);
        break;
      }
    }
  }
  for (int k : o.mrr_cutoffs)
    v.push_back(mteb_first != 0 && mteb_first <= k ? 1.0 / static_cast<double>(mteb_first) : 0.0);
  KALM_ASSERT(v.size() == num_measures, "retrieval measure count");
  return v;
}

void check_score(double score, const std::string& query, const std::string& doc) {
  if (!std::isfinite(score))
    throw FormatError("retrieval evaluation: " + (query.empty() ? "" : "query '" + query + "', ") +
                      "document '" + doc + "': score is not a finite number");
}

}  // namespace

std::vector<std::string> retrieval_measure_names(const RetrievalOptions& options) {
  return names_for(check(options));
}

std::vector<double> evaluate_query(const std::unordered_map<std::string, std::int64_t>& judgements,
                                   const std::vector<std::pair<std::string, double>>& docs,
                                   const RetrievalOptions& options) {
  const CheckedOptions o = check(options);
  std::vector<Doc> ranked;
  ranked.reserve(docs.size());
  for (const auto& [id, score] : docs) {
    check_score(score, "", id);
    ranked.push_back({&id, score});
  }
  std::vector<const std::string*> ids;
  ids.reserve(docs.size());
  for (const Doc& d : ranked) ids.push_back(d.id);
  std::sort(ids.begin(), ids.end(), [](auto a, auto b) { return *a < *b; });
  auto dup = std::adjacent_find(ids.begin(), ids.end(), [](auto a, auto b) { return *a == *b; });
  if (dup != ids.end())
    throw FormatError("retrieval evaluation: document '" + **dup + "' retrieved twice");
  return evaluate_one(judgements, std::move(ranked), o, names_for(o).size());
}

RetrievalEvaluation evaluate_retrieval(const Qrels& qrels, const Run& run,
                                       const RetrievalOptions& options) {
  const CheckedOptions o = check(options);
  RetrievalEvaluation result;
  result.measures = names_for(o);
  result.means.assign(result.measures.size(), 0.0);

  for (const auto& [qid, docs] : run) {
    auto judged = qrels.find(qid);
    if (judged == qrels.end()) {
      ++result.skipped_run_queries;
      continue;
    }
    std::vector<Doc> ranked;
    ranked.reserve(docs.size());
    for (const auto& [doc, score] : docs) {
      check_score(score, qid, doc);
      ranked.push_back({&doc, score});
    }
    result.query_ids.push_back(qid);
    result.values.push_back(evaluate_one(judged->second, std::move(ranked), o, result.measures.size()));
  }
  for (const auto& [qid, judged] : qrels)
    if (run.find(qid) == run.end()) ++result.skipped_qrels_queries;

  if (result.query_ids.empty())
    throw FormatError("retrieval evaluation: no query is both in the run (" +
                      std::to_string(run.size()) + " queries) and in the qrels (" +
                      std::to_string(qrels.size()) + " queries)");
  // Summed in query order and divided once, as trec_eval's accumulate/average.
  for (const auto& row : result.values)
    for (std::size_t m = 0; m < row.size(); ++m) result.means[m] += row[m];
  const double q = static_cast<double>(result.query_ids.size());
  for (std::size_t m = 0; m < result.means.size(); ++m)
    // num_* are totals in trec_eval's summary, not means.
    if (result.measures[m].rfind("num_", 0) != 0) result.means[m] /= q;
  return result;
}

std::size_t RetrievalEvaluation::measure_index(std::string_view name) const {
  auto it = std::find(measures.begin(), measures.end(), name);
  if (it == measures.end())
    throw UsageError("retrieval evaluation: no measure named '" + std::string(name) + "'");
  return static_cast<std::size_t>(it - measures.begin());
}

double RetrievalEvaluation::mean(std::string_view name) const {
  return means[measure_index(name)];
}

double RetrievalEvaluation::value(std::string_view query_id, std::string_view name) const {
  const std::size_t m = measure_index(name);
  auto it = std::lower_bound(query_ids.begin(), query_ids.end(), query_id,
                             [](const std::string& a, std::string_view b) { return a < b; });
  if (it == query_ids.end() || *it != query_id)
    throw UsageError("retrieval evaluation: query '" + std::string(query_id) + "' was not evaluated");
  return values[static_cast<std::size_t>(it - query_ids.begin())][m];
}

}  // namespace kalm::eval
