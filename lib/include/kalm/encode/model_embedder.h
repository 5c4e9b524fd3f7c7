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
  std::optional<std::int64_t> max_seq_length;    // sentence_bert_config.json; nullopt when unset
};

// The one rule for the token limit of the model-running tools (special tokens
// included): `flag` (--max-length) when given, else the model's max_seq_length
// (what sentence-transformers truncates to), else kDefaultMaxLength. Throws
// UsageError naming --max-length when `flag` is not positive.
std::int64_t resolve_max_length(const std::optional<std::int64_t>& flag,
                                const std::optional<std::int64_t>& model_max_seq_length);

// Opens `model_dir`; a missing tokenizer is allowed only when require_tokenizer
// is false (pre-tokenised input). Throws ModelError / FormatError naming the file.
LoadedEmbedder load_embedder(const std::string& model_dir, const EmbedderSettings& settings,
                             bool require_tokenizer);

// Only the tokenizer (for --output-format tokens). Throws ModelError.
std::unique_ptr<text::Tokenizer> load_tokenizer_only(const std::string& model_dir);

}  // namespace kalm::encode
