#pragma once
// A model directory opened for embedding: the transformer behind the
// BatchEmbedder interface, its tokenizer (when the directory has one) and the
// sentence-transformers settings that decide how texts are prepared.
//
// Thread safety: load_embedder and resolve_max_length are reentrant; a
// LoadedEmbedder belongs to one thread at a time.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "kalm/encode/engine.h"
#include "kalm/text/tokenizer.h"

namespace kalm::encode {

// Tokens per text when neither --max-length nor the model directory's
// sentence_bert_config.json gives a limit.
inline constexpr std::int64_t kDefaultMaxLength = 512;

struct EmbedderSettings {
  std::string dtype = "f32";   // f32 | bf16
  std::string device = "cpu";  // cpu | cuda | cuda:N
  std::string pooling;         // "" = from the model directory
  std::string attention;       // "" = from the model directory
};

struct LoadedEmbedder {
  std::unique_ptr<BatchEmbedder> embedder;
  std::unique_ptr<text::Tokenizer> tokenizer;   // null when the directory has none
  std::int64_t dim = 0;                          // pooled embedding width
  std::int64_t vocab_size = 0;                   // rows of the embedding matrix
  std::map<std::string, std::string> prompts;    // config_sentence_transformers.json
  std::string default_prompt_name;               // "" when unset
  std::string pooling;                           // the pooling in effect
  std::string attention;                         // the attention in effect
  std::optional<std::int64_t> max_seq_length;    // sentence-transformers' limit; nullopt: not such a model
  std::string max_seq_length_source;             // where max_seq_length comes from, for messages
  bool include_prompt = true;                    // false: prompt tokens are not pooled (1_Pooling/config.json)
};

// The one rule for the token limit of the model-running tools (special tokens
// included): `flag` (--max-length) when given, else the model's max_seq_length
// (what sentence-transformers truncates to), else kDefaultMaxLength. Throws
// UsageError naming --max-length when `flag` is not positive.
std::int64_t resolve_max_length(const std::optional<std::int64_t>& flag,
                                const std::optional<std::int64_t>& model_max_seq_length);

// sentence-transformers' token limit for a model directory, as it resolves it:
// sentence_bert_config.json's max_seq_length; else, for a sentence-transformers
// model (modules.json) whose file leaves it out (sentence-transformers 6 writes
// none), the tokenizer's model_max_length capped at config.json's
// max_position_embeddings; else nullopt (kalm's default applies). `source`
// receives where the value came from.
std::optional<std::int64_t> sentence_transformers_max_length(const std::string& model_dir,
                                                             const text::Tokenizer* tokenizer, std::string& source);

// The device `--device NAME` means for this process: plain "cuda" under torchrun
// or Slurm is the process's own GPU (LOCAL_RANK / SLURM_LOCALID), as in
// kalm-train. Models load there and searches run there.
torch::Device device_for_this_process(const std::string& name);

// Opens `model_dir`; a missing tokenizer is allowed only when require_tokenizer
// is false (pre-tokenised input). Throws ModelError / FormatError naming the file.
LoadedEmbedder load_embedder(const std::string& model_dir, const EmbedderSettings& settings,
                             bool require_tokenizer);

// How many leading tokens of a text prefixed with `prompt` the pooling leaves
// out: 0 unless the model pools with include_prompt=false, then the prompt's
// token count as sentence-transformers measures it (the prompt tokenised alone
// with the tokenizer's special tokens, less a trailing special token). Pass the
// result to Engine::embed's pool_from for every text carrying that prompt.
// `tokenizer` is the model's (LoadedEmbedder::tokenizer, which a caller may have taken).
std::int64_t prompt_pool_skip(const LoadedEmbedder& embedder, const text::Tokenizer& tokenizer,
                              const std::string& prompt);

// A prompt's token count as sentence-transformers 6 measures it for
// include_prompt=false (and kalm-train's --include-prompt false with it).
std::int64_t prompt_token_count(const text::Tokenizer& tokenizer, const std::string& prompt);

// Only the tokenizer (for --output-format tokens). Throws ModelError.
std::unique_ptr<text::Tokenizer> load_tokenizer_only(const std::string& model_dir);

}  // namespace kalm::encode
