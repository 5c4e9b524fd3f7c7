// libFuzzer target: the model's config.json (lib/src/model/config.cpp), through
// parse_config_json, the in-memory twin of parse_config_file.
//
// Checks beyond "no crash": a config kalm accepts passes validate_config, and
// what config_to_json writes for it (as kalm-train's export does) reads back
// as the same model.
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "kalm/model/config.h"

namespace {

using kalm::model::ModelConfig;

void check_same(const ModelConfig& a, const ModelConfig& b) {
  KALM_FUZZ_CHECK(a.architecture == b.architecture, "architecture");
  KALM_FUZZ_CHECK(a.hidden_size == b.hidden_size && a.num_hidden_layers == b.num_hidden_layers &&
                      a.num_attention_heads == b.num_attention_heads &&
                      a.num_key_value_heads == b.num_key_value_heads && a.head_dim == b.head_dim &&
                      a.intermediate_size == b.intermediate_size && a.vocab_size == b.vocab_size &&
                      a.max_position_embeddings == b.max_position_embeddings,
                  "sizes");
  KALM_FUZZ_CHECK(a.rms_norm_eps == b.rms_norm_eps && a.rope_theta == b.rope_theta, "eps / rope_theta");
  KALM_FUZZ_CHECK(a.rope_scaling.type == b.rope_scaling.type &&
                      (a.rope_scaling.type == "default" || a.rope_scaling.factor == b.rope_scaling.factor),
                  "rope_scaling");
  KALM_FUZZ_CHECK(a.layer_types == b.layer_types, "layer_types");
  KALM_FUZZ_CHECK(a.hidden_activation == b.hidden_activation && a.attention_bias == b.attention_bias &&
                      a.tie_word_embeddings == b.tie_word_embeddings && a.torch_dtype == b.torch_dtype,
                  "flags");
  KALM_FUZZ_CHECK(a.pad_token_id == b.pad_token_id && a.bos_token_id == b.bos_token_id &&
                      a.eos_token_id == b.eos_token_id,
                  "special token ids");
  KALM_FUZZ_CHECK(a.default_attention() == b.default_attention(), "attention");
  if (a.architecture == kalm::model::Architecture::Gemma3) {
    KALM_FUZZ_CHECK(a.query_pre_attn_scalar == b.query_pre_attn_scalar &&
                        a.rope_local_base_freq == b.rope_local_base_freq &&
                        a.rope_local_scaling.type == b.rope_local_scaling.type &&
                        a.attn_logit_softcapping == b.attn_logit_softcapping &&
                        a.final_logit_softcapping == b.final_logit_softcapping,
                    "gemma3 fields");
    KALM_FUZZ_CHECK(a.attention_window(kalm::model::AttentionMode::Causal) ==
                        b.attention_window(kalm::model::AttentionMode::Causal),
                    "sliding window");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view json(reinterpret_cast<const char*>(data), size);
  ModelConfig config;
  if (!kalm_fuzz::expect_kalm_errors([&] { config = kalm::model::parse_config_json(json, "config.json"); }))
    return 0;
  (void)config.attention_scale();
  (void)config.attention_window(kalm::model::AttentionMode::Bidirectional);
  std::string written;
  try {
    kalm::model::validate_config(config);
    written = kalm::model::config_to_json(config, config.default_attention());
    ModelConfig again = kalm::model::parse_config_json(written, "written/config.json");
    check_same(config, again);
  } catch (const kalm::Error& e) {
    kalm_fuzz::finding(std::string("a config kalm accepted does not survive config_to_json: ") + e.what() +
                       "\n" + written);
  }
  return 0;
}
