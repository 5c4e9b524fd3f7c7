#pragma once
// kalm-mine-negatives' library entry point: training groups in, the same groups
// with mined hard negatives out (kalm-recipe.md §5.1, §5.4).
//
// Flow: read every group (JSONL, plain or zstd) -> build the candidate pool
// (--corpus, or the deduplicated union of the groups' pos/neg texts in
// first-occurrence order) -> embed queries (with their instruction) and pool
// (without), or read precomputed embeddings -> exact top-k -> per group:
// ranking-consistency filter, window, exclusions, positive-aware rules,
// sampling, shortfall (kalm/mine/selection.h) -> output in input order; dropped
// groups to --rejects; provenance to OUTPUT.meta.json.
//
// Memory: every group and the pool are held in memory (two passes are needed:
// the pool must be complete before any query is searched).
//
// Throws kalm::Error subclasses: UsageError (flags), FormatError (input data,
// naming file:line), IoError, ModelError. Nothing is written on failure.
// Thread safety: one run at a time per process (it sets up LibTorch's pool and
// prints progress); the work inside uses LibTorch's threads.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kalm/cli/tool.h"
#include "kalm/mine/text_embedder.h"

namespace kalm::mine {

struct MineOptions {
  std::vector<std::string> inputs;       // training groups (or --from-labels items); none or "-" = stdin
  std::string output = "-";              // mined groups; "-" = stdout
  std::string rejects;                   // dropped groups with "_reject"; "" = none (a drop is then an error)
  std::string corpus;                    // candidate pool ({"id","text"} JSONL); "" = union of pos/neg
  ModelFlags model;                      // mining model
  std::string query_embeddings;          // precomputed query rows (safetensors "embeddings")
  std::string corpus_embeddings;         // precomputed pool rows
  std::string instruction;               // query instruction when a record has none
  std::string instruction_template = "Instruct: {instruction} \n Query: ";  // KaLM's query template
  std::string range = "50-100";          // rank window A-B, 0-based, B exclusive
  std::string rank_basis = "retrieved";  // retrieved (ranks before exclusions, KaLM) | eligible
  std::int64_t negatives = 7;            // M: negatives per output group
  std::string sampling = "random";       // random | top
  std::string existing = "keep";         // keep (first M, mine the rest) | replace
  std::optional<double> max_score_ratio; // drop candidates scoring above r × the best positive's score
  std::optional<double> margin;          // drop candidates scoring above the best positive's score − m
  std::optional<std::int64_t> filter_topk;  // ranking-consistency filter k (KaLM: 50)
  std::string shortfall = "pad";         // pad | drop
  bool scores = false;                   // write pos_scores / neg_scores from the mining model
  bool from_labels = false;              // input is {"text","label"}; build groups from labels
  std::string label_type = "classification";  // classification | clustering (with --from-labels)
  std::string task;                      // "task" field for --from-labels groups ("" = none)
};

// Adds kalm-mine-negatives' flags, bound to `options`.
void add_mine_flags(cli::Tool& tool, MineOptions& options);

// Runs the tool. Returns nothing; throws kalm::Error subclasses (see above).
void run_mine(const MineOptions& options, const cli::Tool& tool);

}  // namespace kalm::mine
