#pragma once
// The transformer's shape and semantics, read from a Hugging Face config.json.
//
// Supported model_type values:
//   "qwen2"        Qwen2 (KaLM V1-V2.5 backbone)
//   "gemma3_text"  Gemma3 text model (Gemma3ForCausalLM / Gemma3TextModel)
//   "gemma3"       Gemma3 multimodal wrapper; the text model's fields are read
//                  from its nested "text_config" (the vision tower is ignored)
// Anything else is a ModelError naming the file and the model_type.
//
// Missing fields take transformers' defaults for that model type (real Gemma3
// configs rely on them: a gemma-3-4b text_config has no num_attention_heads),
// so a config means the same here as in transformers. Values transformers would
// accept but kalm cannot honour are refused, never ignored: Qwen2 with
// use_sliding_window, an activation other than the family's, a RoPE type other
// than "default" / "linear" or a RoPE key kalm does not know, head counts that
// do not divide.
//
// Both config layouts are read: transformers 4 ("rope_theta", "rope_scaling",
// Gemma3's "rope_local_base_freq" and "sliding_window_pattern", "torch_dtype")
// and transformers 5 ("rope_parameters", per layer type for Gemma3, "dtype",
// "layer_types"). Where a file has both and they disagree, it is refused.
// config_to_json writes both, so either version loads kalm's exports.
//
// Thread safety: plain values; the functions are reentrant.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kalm::model {

enum class Architecture { Qwen2, Gemma3 };

// Causal: token i attends to j <= i. Bidirectional: to every non-pad token
// (Gemma3 local layers: within the sliding window on both sides).
enum class AttentionMode { Causal, Bidirectional };

// Per-layer attention span (Gemma3 alternates; Qwen2 is all Full).
enum class LayerAttention { Full, Sliding };

struct RopeScaling {
  std::string type = "default";  // "default" or "linear"
  double factor = 1.0;           // linear: positions are divided by factor
};

struct ModelConfig {
  Architecture architecture = Architecture::Qwen2;
  std::string model_type;  // as written: "qwen2", "gemma3_text" or "gemma3"

  std::int64_t hidden_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;  // Qwen2: hidden_size / num_attention_heads unless given
  std::int64_t intermediate_size = 0;
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;

  double rope_theta = 10000.0;  // Gemma3: the global layers' base
  RopeScaling rope_scaling;     // Gemma3: global layers only (as transformers)
  double rope_local_base_freq = 10000.0;  // Gemma3 local (sliding) layers
  RopeScaling rope_local_scaling;         // Gemma3 local layers (only transformers 5 can say one)

  // Gemma3 sliding window exactly as written in config.json (transformers
  // rewrites it for bidirectional attention; see attention_window()).
  std::optional<std::int64_t> sliding_window;
  std::vector<LayerAttention> layer_types;  // one per layer

  // Gemma3: scores are scaled by query_pre_attn_scalar^-0.5 (Qwen2: head_dim^-0.5).
  double query_pre_attn_scalar = 0.0;
  // Parsed and saved but not applied: transformers' Gemma3 (v4.50-v4.57) sets
  // it on the attention module and never passes it to the attention kernel,
  // so Gemma3 checkpoints were trained and evaluated without it.
  std::optional<double> attn_logit_softcapping;
  std::optional<double> final_logit_softcapping;  // LM-head only; kept for saving

  std::string hidden_activation;  // "silu" (Qwen2) or "gelu_pytorch_tanh" (Gemma3)
  bool attention_bias = false;    // Qwen2: q/k/v always biased; Gemma3: q/k/v/o if true
  bool use_bidirectional_attention = false;
  bool tie_word_embeddings = false;
  std::string torch_dtype;  // "float32", "bfloat16", ... ("" when absent)

  std::optional<std::int64_t> pad_token_id;
  std::optional<std::int64_t> bos_token_id;
  std::optional<std::int64_t> eos_token_id;

  std::string source;  // the file it came from, for messages ("" if built in code)

  // The attention the checkpoint was trained with: Bidirectional when
  // use_bidirectional_attention is true (or "is_causal": false), else Causal.
  AttentionMode default_attention() const;
  // Gemma3 embeds tokens times sqrt(hidden_size); Qwen2 does not.
  bool scales_embeddings() const { return architecture == Architecture::Gemma3; }
  // Score scale: query_pre_attn_scalar^-0.5 (Gemma3) or head_dim^-0.5 (Qwen2).
  double attention_scale() const;
  // Local layers' reach under `mode`: a token i attends to j when
  //   Causal:        0 <= i - j < attention_window(mode)
  //   Bidirectional: |i - j|    < attention_window(mode)
  // Causal uses sliding_window as is; Bidirectional uses sliding_window / 2 + 1,
  // as transformers' Gemma3TextConfig does (>= v4.57), so about the same number
  // of tokens is visible either way. nullopt when the model has no sliding layers.
  std::optional<std::int64_t> attention_window(AttentionMode mode) const;
};

// Reads and validates `path` (a config.json). Throws IoError (unreadable),
// FormatError (not JSON) or ModelError (unknown model_type, a field of the wrong
// type, an unsupported or inconsistent value), each naming the file and field.
ModelConfig parse_config_file(const std::string& path);
// The same from text; `source` names it in messages.
ModelConfig parse_config_json(std::string_view json, const std::string& source);

// Checks the invariants the model relies on (positive sizes, heads divisible
// by KV heads, one layer type per layer, ...). Throws ModelError naming
// config.source. parse_config_* call it; call it after editing a config.
void validate_config(const ModelConfig& config);

// A config.json that transformers and kalm both load as this model: Qwen2 as
// "qwen2", Gemma3 always as flat "gemma3_text" (the multimodal wrapper is not
// reproduced). `attention` is recorded as use_bidirectional_attention.
// `torch_dtype` overrides config.torch_dtype when not empty.
std::string config_to_json(const ModelConfig& config, AttentionMode attention,
                           const std::string& torch_dtype = "");

std::string_view architecture_name(Architecture architecture);  // "qwen2" / "gemma3"
std::string_view attention_mode_name(AttentionMode mode);       // "causal" / "bidirectional"
// "causal" | "bidirectional"; throws UsageError listing the choices.
AttentionMode parse_attention_mode(std::string_view name);

}  // namespace kalm::model
