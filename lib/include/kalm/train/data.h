#pragma once
// Training data for kalm-train / kalm-distill: training groups read from JSONL
// files, instructions applied, batches planned and groups sampled (recipe §4.4,
// §7.6).
//
// Tasks: every input file is a task named by its file name without the
// .jsonl/.json/.zst suffixes; a directory contributes each regular file in it
// (sorted by name, hidden files skipped) as its own task, and each
// sub-directory as one task named by the sub-directory (its files, recursively,
// sorted). A record's `task` field overrides the name.
//
// Instructions: a record's `instruction`, else the task's entry in the
// instructions file ({"task": "instruction", ...}; "" = no instruction), else
// none. When an instructions file is given every task must appear in it (a
// missing entry is a UsageError rather than a silently uninstructed task).
// Queries get `template` with {instruction} and {query} replaced (KaLM:
// "Instruct: {instruction} \n Query: {query}"); passages never get one.
//
// Batches (plan_epoch): KaLM's DistributedInTaskSampler. Homogeneous: each
// task's examples are shuffled and cut into batches of B; the leftovers of all
// tasks are pooled, shuffled and cut into mixed batches; the batch order is
// shuffled; then, with ratio r < 1, the last floor(B·(1−r)) slots of every
// batch are pooled, permuted and put back. Not homogeneous: one shuffle of
// everything. A final partial batch is dropped (drop_last, as KaLM), and
// reported by EpochPlan::dropped; it differs each epoch.
//
// Groups (sample_group): one positive drawn uniformly per step from `pos`; M
// negatives drawn without replacement from `neg`, or, when `neg` has fewer than
// M, from `neg` repeated ceil(M / |neg|) times (KaLM / FlagEmbedding).
//
// Determinism: all randomness comes from std::mt19937_64 seeded through
// std::seed_seq from (seed, epoch[, batch]) and an explicit Fisher-Yates with
// rejection sampling, so the plan is the same on every platform and needs no
// state beyond the cursor (epoch, batch) to resume exactly.
//
// Thread safety: Dataset is immutable after load; the functions are reentrant.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace kalm::train {

struct Example {
  std::string query;                  // instruction already applied
  std::string prompt;                 // the instruction's prefix of query ("" = none, or not a prefix)
  std::vector<std::string> pos;       // at least one
  std::vector<std::string> neg;
  std::vector<double> pos_scores;     // empty or one per pos
  std::vector<double> neg_scores;     // empty or one per neg
  std::int32_t task = 0;              // index into Dataset::tasks
  std::string type;                   // record `type` ("" when absent)
  std::string source;                 // "file:line", for messages
};

struct Dataset {
  std::vector<Example> examples;
  std::vector<std::string> tasks;                    // task names, first-seen order
  std::map<std::string, std::string> instructions;  // task -> instruction actually used
};

struct DataOptions {
  std::vector<std::string> inputs;  // files or directories (no stdin: tasks need names)
  std::string instructions_file;    // JSON object task -> instruction; "" = none
  std::string instruction_template = "Instruct: {instruction} \n Query: {query}";
  // Task -> K >= 1: the task's groups enter every epoch K times (a small task
  // weighted up against large ones; a copy in the same batch as its original
  // is a duplicate positive, which the loss masks unless told not to).
  std::map<std::string, std::int64_t> oversample;
};

// Reads every input, then repeats the oversampled tasks' groups (after all of
// the inputs, in input order). Throws UsageError (no inputs, stdin, bad
// template, task missing from the instructions file, an oversampled task no
// input has or a factor below 1), IoError, FormatError (file:line).
Dataset load_dataset(const DataOptions& options);

// One --oversample value, "TASK=K" (K an integer from 1 to 1000). Throws
// UsageError naming the value otherwise.
std::pair<std::string, std::int64_t> parse_oversample(const std::string& spec);

// Replaces {instruction} and {query} in `instruction_template`. Throws
// UsageError when either placeholder is missing.
std::string apply_query_template(const std::string& instruction_template, const std::string& instruction,
                                 const std::string& query);

// The sentence-transformers prompt of an instruction: the template up to
// {query}, which must end it ("" otherwise: no prefix prompt can express it).
std::string query_prompt(const std::string& instruction_template, const std::string& instruction);

struct BatchingOptions {
  std::int64_t batch_size = 48;     // B, groups per contrastive batch
  bool task_homogeneous = false;    // KaLM's released script: false
  double homogeneous_ratio = 1.0;   // r in [0, 1]: share of same-task slots per batch
};

struct EpochPlan {
  std::vector<std::vector<std::size_t>> batches;  // example indices, B each
  std::size_t dropped = 0;                        // examples left out of this epoch
};

// The batches of one epoch. Throws UsageError for B < 1, r outside [0, 1], or
// fewer examples than B.
EpochPlan plan_epoch(const Dataset& data, const BatchingOptions& options, std::uint64_t seed,
                     std::uint64_t epoch);

// One sampled group: the query, its positive then M negatives, and the teacher
// scores in the same order (empty unless `with_scores`).
struct SampledGroup {
  std::string query;
  std::vector<std::string> passages;  // 1 + M
  std::vector<double> teacher_scores; // 1 + M or empty
};

// Samples example `index`'s group. Throws FormatError naming the example's
// source when M > 0 and it has no negatives, or when with_scores and the
// record has no pos_scores/neg_scores.
SampledGroup sample_group(const Dataset& data, std::size_t index, std::int64_t num_negatives,
                          bool with_scores, std::mt19937_64& rng);

// The generator for batch `batch` of epoch `epoch`: every group of that batch
// is sampled from it, in batch order.
std::mt19937_64 batch_rng(std::uint64_t seed, std::uint64_t epoch, std::uint64_t batch);

// Uniform integer in [0, n) by rejection (no modulo bias; the same on every
// standard library, unlike std::uniform_int_distribution). n >= 1.
std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n);

}  // namespace kalm::train
