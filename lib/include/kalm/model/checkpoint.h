#pragma once
// Model directories in and out: a Hugging Face directory (config.json +
// model.safetensors or a sharded set with model.safetensors.index.json, plus
// the optional sentence-transformers files) to an Encoder, and back.
//
// Tensor names are accepted as saved by the base model ("embed_tokens.weight",
// "layers.0.self_attn.q_proj.weight", "norm.weight": KaLM's checkpoints), by
// the causal-LM class ("model." prefix; "lm_head.weight" is ignored), and by
// the Gemma3 multimodal class ("language_model.model." in checkpoints before
// transformers 4.52, "model.language_model." after; the vision tower is
// ignored). Every tensor the config implies must be present with its exact
// shape; a tensor under the model's prefix that the config does not explain
// (e.g. a layer beyond num_hidden_layers) is an error too, since it means the
// config and the weights disagree.
//
// Thread safety: load_model/save_model are reentrant; the returned model is
// owned by the caller (see transformer.h for what may run concurrently).

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "kalm/model/config.h"
#include "kalm/model/sentence_transformers.h"
#include "kalm/model/transformer.h"

namespace kalm::model {

struct LoadOptions {
  torch::Device device = torch::Device(torch::kCPU);  // where the parameters live
  torch::ScalarType dtype = torch::kFloat;           // compute dtype: kFloat or kBFloat16
  std::optional<AttentionMode> attention;            // overrides the config's attention
};

struct LoadedModel {
  std::string dir;
  ModelConfig config;
  SentenceTransformersConfig sentence_transformers;
  std::string weights_prefix;  // the name prefix found in the checkpoint ("" or "model." ...)
  Encoder encoder{nullptr};    // in eval mode, on options.device in options.dtype
  // Parameters that share the checkpoint's mapped bytes instead of a copy
  // (the token embedding on CPU when the file's dtype is the compute dtype).
  std::vector<std::string> mapped_parameters;
};

// Loads `dir`. Memory: weights go to their parameters one tensor at a time,
// converted straight to the compute dtype and device (no float32 copy of a
// bf16 checkpoint), and each tensor's mapped pages are given back to the
// kernel once copied, so the process holds about one copy of the model (on a
// GPU: on the device, with little host memory); on CPU the token embedding
// is used in place from the file's mapping (copy-on-write) when its dtype is
// the compute dtype. Throws ModelError (no config.json, no weights, a missing or
// misshapen tensor, embedding rows != vocab_size, unsupported config),
// FormatError (malformed JSON or safetensors) or IoError, each naming the file
// and, where there is one, the tensor (with expected and actual shapes).
// UsageError for an unsupported options.dtype.
LoadedModel load_model(const std::string& dir, const LoadOptions& options = {});

struct SaveOptions {
  // Storage dtype of the weights: the encoder's own when unset.
  std::optional<torch::ScalarType> dtype;
  std::uint64_t max_shard_bytes = 5'000'000'000ULL;  // transformers' default "5GB"
};

// Writes config.json (see config_to_json) and model.safetensors (or shards and
// an index) with unprefixed names, so that load_model and transformers'
// <Family>Model.from_pretrained both read it back. The directory is created if
// needed; each file is written to a temporary and renamed into place (weights
// first, config.json last). Throws IoError, or UsageError for a dtype that
// is not a floating type.
void save_model(const std::string& dir, const EncoderImpl& encoder, const SaveOptions& options = {});

}  // namespace kalm::model
