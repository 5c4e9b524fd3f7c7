#pragma once
// Task runners: one task directory (task.h) + an embedding model -> mteb-style
// scores, for one or more Matryoshka dimensions, plus a lexical baseline that
// needs no model: BM25 for retrieval and reranking, TF-IDF vectors (tfidf.h)
// scored by the task's own protocol for the others.
//
// Protocols (mteb 1.x evaluators unless noted; details in man/kalm-eval.1.md):
// - retrieval: queries of the split's qrels embedded with the instruction,
//   the corpus without; exact inner-product top-k (k = min(top_k, corpus));
//   evaluate_retrieval (trec_eval 9.0.8 semantics); keys ndcg_at_k, map_at_k,
//   recall_at_k, precision_at_k, mrr_at_k, hit_rate_at_k for mteb's k values
//   (1, 3, 5, 10, 20, 100, 1000). Main: ndcg_at_10.
// - reranking: query (instructed) against its positives and negatives (not
//   instructed), cosine; reranking_scores: map (main), mrr_at_10.
// - sts: sts_scores (cosine_spearman main, pearson/spearman per similarity).
// - pair_classification: pair_classification over cosine, dot, euclidean,
//   manhattan; cosine_ap, ..., max_ap (main).
// - classification: classification_experiments (classifier.h): accuracy (main),
//   f1, f1_weighted, precision, recall (+ _weighted).
// - clustering: per set, minibatch k-means (kmeans.h) and V-measure; v_measure
//   (main) = mean over sets, v_measure_std.
// - bitext: bitext_mining: f1 (main), precision, recall, accuracy.
// Lexical baselines (RunnerOptions::bm25): retrieval and reranking are also
// ranked by BM25 (bm25.h); sts, pair_classification, classification and
// clustering are also scored on word TF-IDF vectors and bitext on character-
// trigram TF-IDF vectors (the baselines of mteb-style comparisons: TF-IDF +
// logistic regression, TF-IDF + k-means, trigram matching), through the same
// protocol and metrics as the embeddings, without instructions. The TF-IDF
// vocabulary and idf are fitted on the split's texts that the task embeds
// (classification: train and test together), with at most
// min(65536, 2^27 / texts) features so the dense vectors stay within 512 MiB.
// Symmetric tasks (sts, pair_classification, bitext) instruct both sides when
// the task's instruction_both_sides is true (KaLM V2); classification and
// clustering texts are all instructed (they are queries in KaLM's scheme).
//
// Embeddings: each text is embedded once at the encoder's full width; every
// requested dimension d takes the first d columns and L2-normalises rows
// (finalize_embeddings), so one run scores every Matryoshka truncation.
//
// Thread safety: one runner call at a time per encoder. Errors: what task.h's
// loaders throw; UsageError for a dimension above the encoder's width or a
// main_score that is not one of the task's metrics; FormatError for an
// embedding matrix whose rows do not match the data.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kalm/eval/task.h"
#include "kalm/search/topk.h"

namespace kalm::eval {

// What a runner needs from a model.
class TextEncoder {
 public:
  virtual ~TextEncoder() = default;
  // Pooled embeddings [texts.size(), dim()] (float32, CPU, not yet normalised),
  // in input order. `what` names the texts' source for messages. Every text
  // begins with `prompt` (its instruction prefix, "" for none): a model whose
  // pooling leaves prompts out (sentence-transformers' include_prompt=false)
  // pools the rest only, as sentence-transformers' encode(prompt=...) does.
  virtual torch::Tensor encode(const std::vector<std::string>& texts, const std::string& what,
                               const std::string& prompt) = 0;
  // The embeddings' width; 0 when it is known only once texts are encoded (the
  // TF-IDF baseline's vocabulary).
  virtual std::int64_t dim() const = 0;
};

struct RunnerOptions {
  std::vector<std::int64_t> dims;                               // Matryoshka widths; empty = full width
  std::string instruction_template = "Instruct: {instruction} \n Query: ";  // KaLM's query template
  bool use_instructions = true;                                 // false: never prefix texts
  bool bm25 = true;                                             // lexical baselines: BM25 / TF-IDF
  std::int64_t top_k = 1000;                                    // retrieval: documents ranked per query
  search::SearchPrecision search_precision = search::SearchPrecision::F32;  // retrieval's top-k products
  torch::Device search_device = torch::kCPU;  // where retrieval searches: the model's device
  std::uint64_t seed = 42;                                      // classification / clustering draws
  std::vector<std::string> splits;                              // override the task's splits
};

// Metric name -> value, in report order.
using Metrics = std::vector<std::pair<std::string, double>>;
// Value of `name`; throws UsageError naming the available metrics when absent.
double metric_value(const Metrics& metrics, const std::string& name);

struct DimResult {
  std::int64_t dim = 0;
  Metrics metrics;
  double main_score = 0;
};

struct SplitResult {
  std::string split;
  std::vector<DimResult> dims;      // in the order of RunnerOptions::dims
  std::optional<Metrics> bm25;      // retrieval / reranking when asked for
  double bm25_main_score = 0;
  std::optional<Metrics> tfidf;     // the other task types when asked for
  double tfidf_main_score = 0;
  std::string tfidf_features;       // "words" | "char-trigrams"
  std::int64_t tfidf_width = 0;     // the TF-IDF vectors' width (features kept)
};

struct TaskTiming {
  double load = 0;     // reading the task's files
  double encode = 0;   // tokenising + model
  double search = 0;   // top-k search / similarity computation
  double metrics = 0;  // scoring (metrics, probes, clustering)
  double bm25 = 0;     // indexing + BM25 search
  double tfidf = 0;    // TF-IDF vectors + their scoring
};

struct TaskResult {
  TaskSpec spec;
  std::vector<SplitResult> splits;
  TaskTiming timing;
  double seconds = 0;  // wall time of the whole task
};

// Runs a task with a model.
TaskResult run_task(const TaskSpec& spec, TextEncoder& encoder, const RunnerOptions& options);

// Retrieval with precomputed embeddings: query_embeddings rows follow
// queries.jsonl, corpus_embeddings rows follow corpus.jsonl (kalm-embed keeps
// input order). Any floating dtype; rows are normalised per dimension.
TaskResult run_retrieval_with_embeddings(const TaskSpec& spec, const torch::Tensor& query_embeddings,
                                         const torch::Tensor& corpus_embeddings, const RunnerOptions& options);

// How a results file records its provenance.
struct ResultMeta {
  std::string model;         // model directory or embedding files
  std::string kalm_version;  // "0.1.0 (git abc)"
  std::string command;       // the command line
  std::optional<std::int64_t> max_length;  // tokens per text in effect; unset for precomputed embeddings
};

// One task's results file (JSON text, newline-terminated):
//   {"task_name", "task_type", "model", "kalm_version", "command", "max_length" (null: precomputed),
//    "main_metric", "dims": [..], "evaluation_time", "timing": {...},
//    "scores": {"<split>": [{"dim", "split", "languages", "hf_subset",
//                            "main_score", <metric>: value, ...}, ...]},
//    "bm25": {"<split>": {"split", "languages", "main_score", ...}}   (retrieval, reranking; when run)
//    "tfidf": {"<split>": {"split", "languages", "features": "words" | "char-trigrams", "width",
//                          "main_score", ...}}   (the other types; when run)}
// Non-finite values (an undefined correlation) are written as null.
std::string task_result_json(const TaskResult& result, const ResultMeta& meta);

// The terminal table: one row per task and split; columns task, type, split,
// metric, one per dimension ("dim=D"), "bm25" and "tfidf" when any task has it.
// Scores are printed x100 with two decimals, as the MTEB leaderboard shows them.
std::string results_table(const std::vector<TaskResult>& results);

}  // namespace kalm::eval
