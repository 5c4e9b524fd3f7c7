#pragma once
// kalm-eval's library entry point (man/kalm-eval.1.md).
//
// Three modes:
//   tasks      kalm-eval --model DIR TASK_DIR... [--suite FILE] [--dim 896,256]
//              [--output-dir DIR]: run every task (task.h, runner.h), write one
//              results JSON per task into --output-dir (atomic), print the
//              table on stdout.
//   embeddings kalm-eval --query-embeddings Q --corpus-embeddings C TASK_DIR:
//              score a retrieval task from kalm-embed outputs (rows in
//              queries.jsonl / corpus.jsonl order).
//   trec       kalm-eval --qrels QRELS --run RUN [--per-query]: print the
//              evaluate_trec_files JSON on stdout.
//
// Errors: UsageError for flag misuse (exit 2); everything the loaders, the
// model and the runners throw (exit 1). A failed task leaves no results file.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kalm/cli/tool.h"
#include "kalm/eval/runner.h"

namespace kalm::eval {

struct EvalOptions {
  std::vector<std::string> tasks;              // task directories
  std::string suite;                           // file listing task directories, one per line
  std::string model;                           // Hugging Face model directory
  std::string query_embeddings;                // precomputed query embeddings (safetensors)
  std::string corpus_embeddings;               // precomputed corpus embeddings (safetensors)
  std::string qrels;                           // TREC qrels (with --run)
  std::string run;                             // TREC run (with --qrels)
  bool per_query = false;                      // --qrels/--run: per-query measures too
  std::string output_dir;                      // one results JSON per task; "" = none
  std::string dim;                             // Matryoshka widths "896,256,64"; "" = the model's
  std::vector<std::string> splits;             // override every task's splits
  std::string instruction_template = "Instruct: {instruction} \n Query: ";  // KaLM's query template
  bool instructions = true;                    // apply the tasks' instructions
  bool bm25 = true;                            // lexical baselines: BM25 (retrieval, reranking), TF-IDF (others)
  std::int64_t top_k = 1000;                   // retrieval: documents ranked per query
  std::optional<std::int64_t> max_length;      // tokens per text, special tokens included; unset = the model's, else 512
  std::int64_t batch_tokens = 0;               // padded tokens per forward pass; 0: the device's default
  std::string dtype = "f32";                   // compute dtype: f32 | bf16
  std::string device = "cpu";                  // cpu | cuda | cuda:N
  std::string search_precision = "f32";        // top-k products: f32 | bf16 | auto (kalm/search/topk.h)
  std::string pooling;                         // override: mean | last | cls
  std::string attention;                       // override: causal | bidirectional
};

void add_eval_flags(cli::Tool& tool, EvalOptions& options);

// Runs kalm-eval. Throws kalm::Error subclasses.
void run_eval(const EvalOptions& options, const cli::Tool& tool);

// "896,256,64" -> {896, 256, 64}; "" -> {}. Throws UsageError naming --dim for
// anything but positive integers separated by commas.
std::vector<std::int64_t> parse_dims(const std::string& spec);

// The task directories of a suite file: one per line, relative to the suite
// file's directory unless absolute; blank lines and '#' comments skipped.
// Throws IoError (unreadable), FormatError naming suite:line (a directory that
// does not exist).
std::vector<std::string> read_suite(const std::string& path);

// The model behind the runners' TextEncoder: tokenises in chunks, embeds with
// the encode Engine, returns pooled rows in input order.
std::unique_ptr<TextEncoder> open_model_encoder(const EvalOptions& options, bool quiet);

}  // namespace kalm::eval
