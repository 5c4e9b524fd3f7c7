#pragma once
// Texts -> L2-normalised embeddings for the data tools (mining, filtering), and
// precomputed embedding files, behind one small interface.
//
// TextEmbedder opens a model directory once (kalm/encode/model_embedder.h),
// tokenises with the directory's tokenizer (required: the data tools see text),
// truncates to the token limit (encode::resolve_max_length: --max-length, else
// the model's max_seq_length, else 512) and runs the encoding engine. Rows come back in input
// order, float32 on the CPU, normalised (cosine = inner product).
//
// Thread safety: one TextEmbedder per thread.

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <map>
#include <string>
#include <vector>

#include "kalm/encode/model_embedder.h"
#include "kalm/search/topk.h"

namespace kalm::mine {

struct ModelFlags {
  std::string model;                 // Hugging Face model directory ("" = none)
  std::optional<std::int64_t> max_length;  // tokens per text, special tokens included; unset = the model's
  std::int64_t batch_tokens = 0; // padded tokens per forward pass; 0: the device's default
  std::string dtype = "f32";         // f32 | bf16
  std::string device = "cpu";        // cpu | cuda | cuda:N
  std::string search_precision = "f32";  // top-k products: f32 | bf16 | auto (kalm/search/topk.h)
  std::string pooling;               // "" = the model's
  std::string attention;             // "" = the model's
};

// The tools search where the model runs (search_device_of: --device), so the
// search precision the flags ask for has "auto" resolved for that device.
// Throws UsageError for an unknown name.
search::SearchPrecision search_precision_of(const ModelFlags& flags);
torch::Device search_device_of(const ModelFlags& flags);

class TextEmbedder {
 public:
  // Throws ModelError when the directory is unusable or has no tokenizer,
  // UsageError when flags.max_length is set but not positive.
  explicit TextEmbedder(const ModelFlags& flags);
  ~TextEmbedder();

  // [N, D] float32, rows normalised. `prefix` is prepended to every text (an
  // instruction, or "" for passages); `prefixes`, when non-empty, gives one per
  // text instead. `where` names each text for errors (e.g. "data.jsonl:3"); a
  // text with no tokens is a FormatError naming it.
  torch::Tensor embed(const std::vector<std::string>& texts, const std::vector<std::string>& prefixes,
                      const std::vector<std::string>& where);
  // Token count of each text (special tokens included, not truncated).
  std::vector<std::int64_t> count_tokens(const std::vector<std::string>& texts);

  const encode::LoadedEmbedder& loaded() const { return loaded_; }
  const std::string& model_dir() const { return flags_.model; }
  // The token limit in effect (what metadata records as max_length).
  std::int64_t max_length() const { return max_length_; }

 private:
  ModelFlags flags_;
  encode::LoadedEmbedder loaded_;
  std::int64_t max_length_ = encode::kDefaultMaxLength;
  std::map<std::string, std::int64_t> prompt_skip_;  // prefix -> its tokens left out of pooling
};

}  // namespace kalm::mine
