#pragma once
// Evaluation task directories: a task.json describing the task plus its data as
// JSON Lines (and TREC/mteb qrels for retrieval). The format is documented for
// users in man/kalm-eval.1.md ("TASK DIRECTORIES"); in short:
//
//   task.json  {"type": "retrieval"|"reranking"|"sts"|"pair_classification"|
//                       "classification"|"clustering"|"bitext",
//               "name": str, "instruction": str?, "instruction_both_sides": bool?,
//               "main_score": str?, "splits": [str]? (default ["test"]),
//               "languages": [str]?, "train_split": str? (classification),
//               "n_experiments": int?, "samples_per_label": int? (classification),
//               "batch_size": int? (clustering)}
//   retrieval            corpus.jsonl  {"id", "text", "title"?}
//                        queries.jsonl {"id", "text"}
//                        qrels/<split>.tsv  "qid docid score" (mteb, optional
//                        header line) or "qid iter docid score" (TREC)
//   reranking            <split>.jsonl {"query", "positive": [str], "negative": [str]}
//   sts                  <split>.jsonl {"sentence1", "sentence2", "score": num}
//   pair_classification  <split>.jsonl {"sentence1", "sentence2", "label": 0|1}
//   classification       <train_split>.jsonl and <split>.jsonl {"text", "label": str|int}
//   clustering           <split>.jsonl {"text", "label"} (one set) or
//                        {"sentences": [str], "labels": [str|int]} (one set per line)
//   bitext               <split>.jsonl {"sentence1", "sentence2"} (source, its translation)
//
// Ids may be JSON strings or integers (an integer id is kept as its digits).
// Unknown fields are ignored (mteb datasets carry extra columns).
//
// Thread safety: pure functions. Errors: IoError when a file cannot be opened;
// FormatError naming file:line and field for malformed content (invalid JSON,
// a missing or mistyped field, a duplicate id, an unknown task type, qrels that
// name a query missing from queries.jsonl, an empty split).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kalm/eval/retrieval_metrics.h"

namespace kalm::eval {

enum class TaskKind { kRetrieval, kReranking, kSts, kPairClassification, kClassification, kClustering, kBitext };

// "retrieval", "pair_classification", ... as written in task.json.
std::string_view task_kind_name(TaskKind kind);
std::optional<TaskKind> parse_task_kind(std::string_view name);
// The mteb main score of a task type: ndcg_at_10, map, cosine_spearman, max_ap,
// accuracy, v_measure, f1.
std::string_view default_main_score(TaskKind kind);
// Whether both sides of a pair are the same kind of text (sts, pair
// classification, bitext): the instruction then goes on both sides.
bool is_symmetric(TaskKind kind);

struct TaskSpec {
  std::string dir;                         // the task directory as given
  std::string name;                        // "name" (default: the directory's base name)
  TaskKind type = TaskKind::kRetrieval;
  std::string instruction;                 // query-side task instruction ("" = none)
  bool instruction_both_sides = true;      // symmetric tasks: instruct both sides
  std::string main_score;                  // metric key reported as main_score
  std::vector<std::string> splits{"test"};
  std::vector<std::string> languages;
  std::string train_split = "train";       // classification: the classifier's training data
  int n_experiments = 10;                  // classification: mteb's undersampling rounds
  int samples_per_label = 8;               // classification: train rows kept per label per round
  int batch_size = 500;                    // clustering: mini-batch k-means batch size
};

// Reads <dir>/task.json. Throws IoError (missing), FormatError (malformed,
// unknown type, bad field: "<dir>/task.json: field 'type': ...").
TaskSpec load_task_spec(const std::string& dir);

struct RetrievalData {
  std::vector<std::string> corpus_ids;
  std::vector<std::string> corpus_texts;   // title + " " + text when a title is given (as mteb)
  std::vector<std::string> query_ids;      // every query of queries.jsonl, file order
  std::vector<std::string> query_texts;
  Qrels qrels;                             // of the split
};
// Loads corpus, queries and qrels/<split>.tsv.
RetrievalData load_retrieval(const TaskSpec& spec, const std::string& split);

// Parses a qrels file in mteb form ("query-id corpus-id score", tab- or
// space-separated, an optional header line) or TREC form ("qid iter docid rel").
// The form is decided by the first data line's field count and must not change.
Qrels read_qrels_any(const std::string& path);

struct RerankingSample {
  std::string query;
  std::vector<std::string> positive;
  std::vector<std::string> negative;
};
std::vector<RerankingSample> load_reranking(const TaskSpec& spec, const std::string& split);

// sts (score), pair_classification (label) and bitext (neither).
struct PairData {
  std::vector<std::string> first;
  std::vector<std::string> second;
  std::vector<double> scores;  // sts
  std::vector<int> labels;     // pair_classification
};
PairData load_pairs(const TaskSpec& spec, const std::string& split);

// Texts with labels mapped to dense integers through `label_ids` (shared by a
// task's train and test splits, so the same label gets the same integer).
struct LabeledTexts {
  std::vector<std::string> texts;
  std::vector<std::int64_t> labels;
};
using LabelIds = std::map<std::string, std::int64_t>;
LabeledTexts load_labeled(const TaskSpec& spec, const std::string& split, LabelIds& label_ids);

// Clustering: one set for {"text","label"} lines, one per line for
// {"sentences","labels"} lines (the two forms cannot be mixed in a file).
std::vector<LabeledTexts> load_clustering(const TaskSpec& spec, const std::string& split);

}  // namespace kalm::eval
