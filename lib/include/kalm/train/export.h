#pragma once
// The non-weight files of a trained model directory, so that
// sentence-transformers loads it as kalm trained it (Transformer -> Pooling ->
// Normalize, the task instructions as prompts) and transformers finds its
// tokenizer. Weights and config.json are save_model's job (model/checkpoint.h).
//
// Every file is written atomically (temporary + rename). Throws IoError.
// Thread safety: reentrant; do not write the same directory from two threads.

#include <cstdint>
#include <map>
#include <string>

#include "kalm/model/pooling.h"

namespace kalm::train {

struct SentenceTransformersExport {
  model::Pooling pooling = model::Pooling::Mean;
  bool include_prompt = true;                  // false: prompts are left out of the pooling
  std::int64_t dimension = 0;                  // word_embedding_dimension (hidden size)
  std::int64_t max_seq_length = 512;           // sentence_bert_config.json
  std::map<std::string, std::string> prompts;  // name -> prefix text ("query", task names, ...)
};

// Writes modules.json, 1_Pooling/config.json, sentence_bert_config.json and
// config_sentence_transformers.json (similarity "cosine", no default prompt)
// into `dir` (created if needed).
void write_sentence_transformers_files(const std::string& dir, const SentenceTransformersExport& spec);

// Copies the tokenizer files found in `from` (tokenizer.json,
// tokenizer_config.json, tokenizer.model, special_tokens_map.json, vocab.json,
// merges.txt, added_tokens.json) into `to`. Throws ModelError when `from` has
// neither tokenizer.json nor tokenizer.model.
void copy_tokenizer_files(const std::string& from, const std::string& to);

// Writes `text` to `path` atomically.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace kalm::train
