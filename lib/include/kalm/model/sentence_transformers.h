#pragma once
// The sentence-transformers files of a model directory: what the model's
// authors say about pooling, normalisation and prompts. kalm's flags override
// these; they are defaults, never requirements.
//
//   modules.json                      [{"idx", "name", "path", "type"}, ...]
//   <pooling path>/config.json        pooling_mode_* flags, include_prompt
//                                     (path from the Pooling module; 1_Pooling
//                                     when modules.json is absent)
//   config_sentence_transformers.json {"prompts": {name: text},
//                                      "default_prompt_name": str|null,
//                                      "similarity_fn_name": str|null}
//   sentence_bert_config.json         {"max_seq_length": int|null,
//                                      "do_lower_case": bool}
//                                     (sentence-transformers truncates every
//                                     text to max_seq_length tokens, special
//                                     tokens included)
//
// Every file is optional. A file that exists but is malformed, or a pooling
// mode kalm cannot compute (max, mean_sqrt_len, weightedmean, or several modes
// at once), is an error naming the file: silently pooling differently from
// what the model was trained with would give wrong embeddings. For the same
// reason do_lower_case=true is refused: sentence-transformers lowercases texts
// with Python's str.lower() (full Unicode case mapping), which kalm does not
// reproduce.
//
// Thread safety: plain values; read_sentence_transformers is reentrant.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kalm/model/pooling.h"

namespace kalm::model {

struct SentenceTransformersModule {
  std::int64_t idx = 0;
  std::string name;
  std::string path;  // relative to the model directory ("" = the directory)
  std::string type;  // e.g. "sentence_transformers.models.Pooling"
};

struct SentenceTransformersConfig {
  std::vector<SentenceTransformersModule> modules;  // empty without modules.json
  std::optional<Pooling> pooling;                   // from the pooling config
  std::optional<std::int64_t> word_embedding_dimension;
  bool include_prompt = true;   // false: prompt tokens are left out of the pooling
  bool normalize = false;       // a Normalize module is listed
  std::map<std::string, std::string> prompts;
  std::optional<std::string> default_prompt_name;
  std::optional<std::string> similarity_fn_name;
  std::optional<std::int64_t> max_seq_length;  // sentence_bert_config.json; > 0 when set

  // True when any of the files was found.
  bool present() const;
};

// Reads whichever of the files exist in `dir`. Throws FormatError (invalid
// JSON), ModelError (wrong field types, unsupported pooling, a Pooling module
// without a config, a default_prompt_name not in prompts, a max_seq_length
// that is not a positive integer, do_lower_case=true) or IoError, naming the
// file.
SentenceTransformersConfig read_sentence_transformers(const std::string& dir);

// Only <dir>/sentence_bert_config.json's max_seq_length: nullopt when the file
// is absent or the value is null or absent. For callers that need the token
// limit without loading the model (token ids only). Throws as above, for that
// file.
std::optional<std::int64_t> read_max_seq_length(const std::string& dir);

}  // namespace kalm::model
