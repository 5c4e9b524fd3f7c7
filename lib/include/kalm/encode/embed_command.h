#pragma once
// kalm-embed's library entry point: records in, embeddings (or token ids) out.
//
// Reads JSONL corpus records ({"id","text"} or {"id","input_ids"}) or plain text
// lines from files or stdin, in chunks, so memory is bounded by one chunk, one
// batch and the output matrix. Output rows are in input order. Formats:
//   safetensors  tensor "embeddings" [N, D] f32 (+ "ids" as metadata-free JSON
//                sidecar is not needed: ids go to __metadata__ "ids_file" only when
//                given) with the metadata of conventions.md
//   npy          [N, D] float32, readable by numpy.load
//   jsonl        {"id": ..., "embedding": [...]} per line (streamed)
//   tokens       {"id": ..., "ids": [...]} per line: the tokenizer alone
// Everything goes through atomic outputs: a failed run leaves no output file.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kalm/cli/tool.h"

namespace kalm::encode {

struct EmbedOptions {
  std::vector<std::string> inputs;             // input files; none or "-" = stdin
  std::string input_format = "jsonl";          // jsonl | text
  std::string output = "-";                    // output file; "-" = stdout
  std::string output_format = "auto";          // auto (by extension) | safetensors | npy | jsonl | tokens
  std::string model;                           // Hugging Face model directory
  std::string instruction;                     // task instruction, applied with instruction_template
  std::string instruction_template = "Instruct: {instruction} \n Query: ";  // KaLM's query template
  std::string prompt;                          // prompt name from config_sentence_transformers.json
  std::int64_t dim = 0;                        // Matryoshka dimension; 0 = the model's
  bool normalize = true;                       // L2-normalise the output rows
  std::string quantize = "none";               // none | int8 | uint8 | binary | ubinary (kalm/io/quantize.h)
  std::string quantize_ranges;                 // int8/uint8 ranges file; "" = the corpus's own
  double dist_timeout = 1800;                  // multi-process launch: seconds rank 0 waits for the others' parts
  std::optional<std::int64_t> max_length;      // tokens per text, special tokens included; unset = resolve_max_length's rule
  bool truncate = true;                        // false: an over-long text is an error
  std::int64_t batch_tokens = 0;               // padded tokens per forward pass; 0: the device's default
  std::string dtype = "f32";                   // compute dtype: f32 | bf16
  std::string device = "cpu";                  // cpu | cuda | cuda:N
  std::string pooling;                         // override: mean | last | cls
  std::string attention;                       // override: causal | bidirectional
  std::string shard;                           // "K/N": embed the K-th (1-based) of N contiguous slices
  bool special_tokens = true;                  // tokens output: include the model's special tokens
  std::int64_t chunk_records = 8192;           // records tokenised and embedded per chunk
  std::string overlap = "auto";                // input and JSON output on other threads beside the model: auto (on a GPU) | on | off
  std::string profile;                         // Chrome trace of the profile_batches window (core/profile.h); "" = none
  std::optional<std::string> profile_batches;  // "FIRST:LAST" (1-based); unset = kDefaultProfileBatches
};
inline constexpr const char* kDefaultProfileBatches = "3:10";

// The compute flags every model-running tool shares, same names, defaults and
// checks: --batch-tokens, --dtype (f32|bf16), --device (cpu|cuda|cuda:N).
void add_compute_flags(CLI::App& app, std::int64_t& batch_tokens, std::string& dtype, std::string& device);
// --search-precision f32|bf16|int8|auto for the tools that search embeddings
// (kalm/search/topk.h: bf16 and int8 are certified first passes with the same answer).
void add_search_precision_flag(CLI::App& app, std::string& precision);

// Where the model-side flags of a model-running tool (kalm-embed, kalm-eval,
// kalm-mine-negatives, kalm-synth-filter) land. Each pointer names the member of
// the tool's options struct that a flag binds to; its value when the flag is
// added is the default that --help shows. A null pointer leaves the flag out,
// for a tool that has no use for it (kalm-eval takes instructions from its task
// files, so it has no --instruction). The *_help strings replace the shared
// wording where a tool narrows a flag's meaning (e.g. mine: "Mining model");
// empty = the shared wording. The pointers must outlive the parse.
struct ModelFlagTargets {
  std::string* model = nullptr;                 // -m,--model DIR
  std::string* instruction = nullptr;           // --instruction TEXT
  std::string* instruction_template = nullptr;  // --instruction-template TEMPLATE
  std::optional<std::int64_t>* max_length = nullptr;  // --max-length N, checked > 0; unset = the model's
  std::string* pooling = nullptr;               // --pooling mean|last|cls; "" = the model's
  std::string* attention = nullptr;             // --attention causal|bidirectional; "" = the model's
  std::string model_help;
  std::string instruction_help;
  std::string instruction_template_help;
  std::string max_length_help;
};

// Adds the model-side flags named in `targets` to `app`, in the "Model" group,
// with one set of names, checks and (unless overridden) help texts, in this
// order: --model, --instruction, --instruction-template, --max-length,
// --pooling, --attention. --max-length's help always ends with where the limit
// comes from when the flag is not given (resolve_max_length, model_embedder.h);
// leaving it unset keeps --config / --dump-config round-tripping. A tool adds its own model flags (--prompt,
// --instructions, --truncate) after them. Not thread-safe (CLI11 is not).
void add_model_flags(CLI::App& app, const ModelFlagTargets& targets);

// Adds kalm-embed's flags, bound to `options`, to the tool's parser.
void add_embed_flags(cli::Tool& tool, EmbedOptions& options);

// Runs kalm-embed. Throws kalm::Error subclasses (see error.h).
void run_embed(const EmbedOptions& options, const cli::Tool& tool);

// Parses "K/N" (1 <= K <= N). Throws UsageError.
std::pair<std::int64_t, std::int64_t> parse_shard(const std::string& spec);

// Replaces "{instruction}" in the template; throws UsageError when it is absent.
std::string apply_instruction(const std::string& instruction_template, const std::string& instruction);

}  // namespace kalm::encode
