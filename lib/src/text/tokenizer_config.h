#pragma once
// tokenizer_config.json: the transformers-side settings that change ids or name
// special tokens (internal to kalm::text).

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace kalm::text::detail {

struct TokenizerConfig {
  std::string source;  // file name for messages
  std::string tokenizer_class;
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  std::optional<bool> add_bos_token, add_eos_token;
  // LlamaTokenizer(Fast) settings that change how a tokenizer.model is applied.
  std::optional<bool> legacy, add_prefix_space;
  std::optional<std::size_t> model_max_length;

  // True for the tokenizer classes whose fast version rebuilds its post-processor
  // from add_bos_token / add_eos_token (Llama, CodeLlama, Gemma), when the config
  // sets either flag.
  bool rebuilds_bos_eos_template() const;

  // True for the tokenizer classes whose fast version transformers builds from a
  // bare tokenizer.model with its LlamaConverter (Llama, CodeLlama): those ids do
  // not come from sentencepiece's own normaliser (sentencepiece_tokenizer.cpp).
  bool converts_spm_like_llama() const;
};

// Parses the JSON text (empty text: an empty config). Throws ModelError naming
// `source` when it is malformed.
TokenizerConfig parse_tokenizer_config(std::string_view json, const std::string& source);

// Reads a whole model file; throws ModelError naming it when it cannot be read.
std::string read_model_file(const std::string& path);

}  // namespace kalm::text::detail
