#pragma once
// TREC qrels and run files, and the JSON report of `kalm-eval --qrels --run`.
//
// Formats (whitespace-separated fields, one record per line; blank lines and
// lines starting with '#' are skipped, as trec_eval 10 does):
//   qrels: `qid iter docid rel`             rel an integer (negative = unjudged)
//   run:   `qid Q0 docid rank score tag`    rank and tag are ignored (trec_eval
//                                           ranks by score); fields after the
//                                           sixth are ignored, as trec_eval does
// Stricter than trec_eval, which reads numbers with atol/atof and accepts
// garbage: a relevance that is not an integer, a score that is not a finite
// number, a line with too few fields (or a qrels line with more than four), and
// a (qid, docid) pair given twice are FormatErrors naming file:line (and the
// first line for duplicates; trec_eval also refuses duplicates).
//
// Thread safety: pure functions. Errors: IoError (cannot open/read), FormatError.

#include <string>
#include <string_view>

#include "kalm/eval/retrieval_metrics.h"

namespace kalm::eval {

// Parse file contents; `name` is used in error messages ("-" shows as <stdin>).
Qrels parse_qrels(std::string_view text, const std::string& name);
Run parse_run(std::string_view text, const std::string& name);

// Read a file ("-" = stdin), plain or zstd-compressed (detected by magic bytes).
Qrels read_qrels(const std::string& path);
Run read_run(const std::string& path);

// The report as JSON text (2-space indented, newline-terminated):
//   {"all": {"num_q": N, "num_ret": .., "map": .., "ndcg_cut_10": .., ..., "mrr_at_10": ..},
//    "<qid>": {...}, ...}
// Keys are trec_eval's measure names (see retrieval_metrics.h) plus mteb's
// mrr_at_k. "all" holds means (num_* are totals, num_q the number of evaluated
// queries, as trec_eval prints them); per-query objects follow in ascending id
// order when `per_query` is true. Numbers are shortest round-trip doubles.
// Throws FormatError when per-query output is asked for and a query is called
// "all" (it would collide with the summary).
std::string retrieval_report_json(const RetrievalEvaluation& evaluation, bool per_query);

// The library entry point of `kalm-eval --qrels Q --run R [--per-query]`:
// read both files, evaluate, return the JSON report.
std::string evaluate_trec_files(const std::string& qrels_path, const std::string& run_path,
                                bool per_query, const RetrievalOptions& options = {});

}  // namespace kalm::eval
