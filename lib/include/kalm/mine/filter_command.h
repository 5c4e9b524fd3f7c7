#pragma once
// kalm-synth-filter's library entry points.
//
// run_filter: training groups in; every input line ends either in the output
// (unchanged, byte for byte) or in the rejects stream with "_reject": {"stage",
// "reason", ...}. kept + rejected = input lines (blank lines aside), always.
// Stages, in order, each seeing only the records the earlier ones kept:
//   parse      malformed: not JSON, not an object, invalid UTF-8, schema errors
//              (missing query or pos, wrong field types)
//   validity   empty_query / empty_positive / empty_negative (after whitespace
//              normalisation), too_short / too_long (token bounds, with --model)
//   equality   query_equals_positive, negative_equals_positive (normalised)
//   dedup      duplicate: same normalised query and same set of normalised
//              positives as an earlier kept record
//   near_dup   near_duplicate: query cosine above --near-dup-threshold with an
//              earlier kept record among its --near-dup-k nearest (with --model)
//   ranking    ranking_consistency: the recipe's filter (kalm/mine/selection.h)
//              over the union pool of the kept records (with --model)
// A stream failure (zstd, I/O, over-long line) is not a record problem: the run
// stops with exit 1 and writes nothing.
//
// run_prompts: personas × task-type templates -> generation prompts (JSONL),
// following the recipe's persona synthesis (§5.2): the persona is the system
// prompt; for two-step (retrieval) types it appears only in the brainstorm step.
//
// Both throw kalm::Error subclasses (UsageError for flags, FormatError naming
// file:line, IoError, ModelError); outputs are atomic. Every record is held in
// memory (the duplicate and ranking stages look at all of them).
// Thread safety: one run at a time per process; fill_template is reentrant.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kalm/cli/tool.h"
#include "kalm/mine/text_embedder.h"

namespace kalm::mine {

struct FilterOptions {
  std::vector<std::string> inputs;            // training groups; none or "-" = stdin
  std::string output = "-";                   // kept records; "-" = stdout
  std::string rejects;                        // rejected records; "" = none (a reject is then an error)
  ModelFlags model;                           // for token bounds, near duplicates, ranking filter
  std::string instruction;                    // query instruction for the ranking filter (records may override)
  std::string instruction_template = "Instruct: {instruction} \n Query: ";
  std::optional<std::int64_t> min_tokens;     // every text at least this many tokens (with --model)
  std::optional<std::int64_t> max_tokens;     // every text at most this many tokens (with --model)
  bool dedup = true;                          // reject exact duplicates after normalisation
  std::optional<double> near_dup_threshold;   // reject query cosine above this (with --model)
  std::int64_t near_dup_k = 16;               // neighbours examined per query for near duplicates
  std::optional<std::int64_t> filter_topk;    // ranking-consistency k (with --model; KaLM: 50)
};

struct PromptOptions {
  std::string personas;                       // JSONL: {"persona": str} (or {"text": str}) per line
  std::string templates;                      // directory of <type>.generate.txt [+ <type>.brainstorm.txt]
  std::vector<std::string> task_types;        // types to use; empty = every template found
  std::string language = "English";           // fills {language} in the templates
  std::string output = "-";                   // prompts JSONL; "-" = stdout
};

// Adds the filter's flags and the `prompts` subcommand with its flags; returns
// the subcommand so the tool can tell which one ran.
CLI::App* add_filter_flags(cli::Tool& tool, FilterOptions& filter, PromptOptions& prompts);

void run_filter(const FilterOptions& options, const cli::Tool& tool);
void run_prompts(const PromptOptions& options, const cli::Tool& tool);

// Fills "{language}" (and any other name in `values`) in a template; unknown
// "{name}" placeholders are left for the generation harness (e.g. {task}).
std::string fill_template(const std::string& text, const std::vector<std::pair<std::string, std::string>>& values);

}  // namespace kalm::mine
