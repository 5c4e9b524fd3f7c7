// config.json parsing: both families, transformers' defaults, and refusals.

#include <doctest/doctest.h>

#include <string>

#include "kalm/error.h"
#include "kalm/model/config.h"
#include "model_test_util.h"

using kalm::ModelError;
using kalm::model::Architecture;
using kalm::model::AttentionMode;
using kalm::model::LayerAttention;
using kalm::model::parse_config_json;

using kalm_model_test::contains;

namespace {

std::string message_of_parse(const std::string& json) {
  try {
    parse_config_json(json, "dir/config.json");
  } catch (const ModelError& e) {
    return e.what();
  }
  DOCTEST_FAIL("expected ModelError for " << json);
  return "";
}


}  // namespace

DOCTEST_TEST_CASE("config: Qwen2-0.5B") {
  const auto c = parse_config_json(R"({
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "max_window_layers": 24, "use_sliding_window": false,
    "tie_word_embeddings": true, "torch_dtype": "bfloat16", "bos_token_id": 151643,
    "eos_token_id": 151643, "rope_scaling": null})",
                                   "config.json");
  DOCTEST_CHECK(c.architecture == Architecture::Qwen2);
  DOCTEST_CHECK(c.hidden_size == 896);
  DOCTEST_CHECK(c.num_hidden_layers == 24);
  DOCTEST_CHECK(c.num_attention_heads == 14);
  DOCTEST_CHECK(c.num_key_value_heads == 2);
  DOCTEST_CHECK(c.head_dim == 64);
  DOCTEST_CHECK(c.intermediate_size == 4864);
  DOCTEST_CHECK(c.vocab_size == 151936);
  DOCTEST_CHECK(c.rope_theta == 1e6);
  DOCTEST_CHECK(c.rms_norm_eps == 1e-6);
  DOCTEST_CHECK(c.rope_scaling.type == "default");
  DOCTEST_CHECK(c.tie_word_embeddings);
  DOCTEST_CHECK(c.torch_dtype == "bfloat16");
  DOCTEST_CHECK(c.attention_bias);
  DOCTEST_CHECK((c.layer_types == std::vector<LayerAttention>(24, LayerAttention::Full)));
  DOCTEST_CHECK(c.default_attention() == AttentionMode::Causal);
  DOCTEST_CHECK(c.attention_scale() == doctest::Approx(0.125));
  DOCTEST_CHECK(!c.attention_window(AttentionMode::Causal));
  DOCTEST_CHECK(!c.scales_embeddings());
}

DOCTEST_TEST_CASE("config: Qwen2 defaults are transformers' and KV heads default to heads") {
  const auto c = parse_config_json(R"({"model_type": "qwen2", "num_attention_heads": 8,
                                       "hidden_size": 256, "dtype": "float32"})",
                                   "config.json");
  DOCTEST_CHECK(c.num_key_value_heads == 8);
  DOCTEST_CHECK(c.head_dim == 32);
  DOCTEST_CHECK(c.vocab_size == 151936);
  DOCTEST_CHECK(c.num_hidden_layers == 32);
  DOCTEST_CHECK(c.intermediate_size == 22016);
  DOCTEST_CHECK(c.rope_theta == 10000.0);
  DOCTEST_CHECK(!c.tie_word_embeddings);
  DOCTEST_CHECK(c.torch_dtype == "float32");
}

DOCTEST_TEST_CASE("config: bidirectional flags") {
  DOCTEST_CHECK(parse_config_json(R"({"model_type": "qwen2", "use_bidirectional_attention": true})", "c")
                    .default_attention() == AttentionMode::Bidirectional);
  DOCTEST_CHECK(parse_config_json(R"({"model_type": "qwen2", "is_causal": false})", "c").default_attention() ==
                AttentionMode::Bidirectional);
  DOCTEST_CHECK(parse_config_json(R"({"model_type": "qwen2", "is_causal": true})", "c").default_attention() ==
                AttentionMode::Causal);
}

DOCTEST_TEST_CASE("config: Gemma3-12B multimodal wrapper with linear RoPE scaling") {
  // The shape of google/gemma-3-12b-pt's config.json (text_config relies on defaults).
  const auto c = parse_config_json(R"({
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
    "text_config": {"hidden_size": 3840, "intermediate_size": 15360, "model_type": "gemma3_text",
      "num_attention_heads": 16, "num_hidden_layers": 48, "num_key_value_heads": 8,
      "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
    "vision_config": {"model_type": "siglip_vision_model"}, "torch_dtype": "bfloat16"})",
                                   "config.json");
  DOCTEST_CHECK(c.architecture == Architecture::Gemma3);
  DOCTEST_CHECK(c.model_type == "gemma3");
  DOCTEST_CHECK(c.hidden_size == 3840);
  DOCTEST_CHECK(c.num_hidden_layers == 48);
  DOCTEST_CHECK(c.head_dim == 256);             // default
  DOCTEST_CHECK(c.vocab_size == 262208);        // default
  DOCTEST_CHECK(c.query_pre_attn_scalar == 256);
  DOCTEST_CHECK(c.rope_theta == 1e6);
  DOCTEST_CHECK(c.rope_local_base_freq == 1e4);
  DOCTEST_CHECK(c.rope_scaling.type == "linear");
  DOCTEST_CHECK(c.rope_scaling.factor == 8.0);
  DOCTEST_CHECK(c.hidden_activation == "gelu_pytorch_tanh");
  DOCTEST_CHECK(!c.attention_bias);
  DOCTEST_CHECK(c.torch_dtype == "bfloat16");
  DOCTEST_REQUIRE(c.layer_types.size() == 48);
  // Pattern 6: five local layers, then one global.
  for (std::size_t i = 0; i < 48; ++i)
    DOCTEST_CHECK((c.layer_types[i] == LayerAttention::Full) == ((i + 1) % 6 == 0));
  DOCTEST_CHECK(c.attention_window(AttentionMode::Causal) == 1024);
  DOCTEST_CHECK(c.attention_window(AttentionMode::Bidirectional) == 513);
  DOCTEST_CHECK(c.attention_scale() == doctest::Approx(1.0 / 16.0));
  DOCTEST_CHECK(c.scales_embeddings());
  DOCTEST_CHECK(c.pad_token_id == 0);
}

DOCTEST_TEST_CASE("config: Gemma3 text with explicit layer_types, softcapping, bidirectional") {
  const auto c = parse_config_json(R"({"model_type": "gemma3_text", "num_hidden_layers": 3,
      "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
      "attn_logit_softcapping": 50.0, "use_bidirectional_attention": true, "sliding_window": 512,
      "sliding_window_pattern": 6, "query_pre_attn_scalar": 144, "head_dim": 64})",
                                   "config.json");
  const std::vector<LayerAttention> want{LayerAttention::Sliding, LayerAttention::Full,
                                         LayerAttention::Sliding};
  DOCTEST_CHECK((c.layer_types == want));
  DOCTEST_CHECK(c.attn_logit_softcapping == 50.0);
  DOCTEST_CHECK(c.default_attention() == AttentionMode::Bidirectional);
  DOCTEST_CHECK(c.sliding_window == 512);  // as written; the window rule lives in attention_window
  DOCTEST_CHECK(c.attention_window(AttentionMode::Bidirectional) == 257);
  DOCTEST_CHECK(c.attention_scale() == doctest::Approx(1.0 / 12.0));
}

DOCTEST_TEST_CASE("config: refusals name the file and the field") {
  std::string msg = message_of_parse(R"({"model_type": "llama"})");
  DOCTEST_CHECK(contains(msg, "dir/config.json"));
  DOCTEST_CHECK(contains(msg, "\"llama\""));
  msg = message_of_parse(R"({"hidden_size": 8})");
  DOCTEST_CHECK(contains(msg, "model_type"));
  msg = message_of_parse(R"({"model_type": "qwen2", "hidden_size": "big"})");
  DOCTEST_CHECK(contains(msg, "dir/config.json: hidden_size"));
  msg = message_of_parse(R"({"model_type": "qwen2", "rope_scaling": {"rope_type": "yarn", "factor": 4}})");
  DOCTEST_CHECK(contains(msg, "rope_scaling"));
  DOCTEST_CHECK(contains(msg, "yarn"));
  msg = message_of_parse(R"({"model_type": "qwen2", "rope_scaling": {"type": "dynamic", "factor": 2}})");
  DOCTEST_CHECK(contains(msg, "dynamic"));
  msg = message_of_parse(R"({"model_type": "qwen2", "use_sliding_window": true})");
  DOCTEST_CHECK(contains(msg, "use_sliding_window"));
  msg = message_of_parse(R"({"model_type": "qwen2", "hidden_act": "gelu"})");
  DOCTEST_CHECK(contains(msg, "hidden_act"));
  msg = message_of_parse(R"({"model_type": "qwen2", "num_attention_heads": 14, "num_key_value_heads": 4,
                             "hidden_size": 896})");
  DOCTEST_CHECK(contains(msg, "num_key_value_heads"));
  msg = message_of_parse(R"({"model_type": "gemma3_text", "num_hidden_layers": 2,
                             "layer_types": ["full_attention"]})");
  DOCTEST_CHECK(contains(msg, "layer_types"));
  msg = message_of_parse(R"({"model_type": "gemma3_text", "num_hidden_layers": 1,
                             "layer_types": ["chunked_attention"]})");
  DOCTEST_CHECK(contains(msg, "chunked_attention"));
  msg = message_of_parse(R"({"model_type": "gemma3", "text_config": 5})");
  DOCTEST_CHECK(contains(msg, "text_config"));
  msg = message_of_parse(R"({"model_type": "gemma3", "text_config": {"hidden_activation": "relu"}})");
  DOCTEST_CHECK(contains(msg, "text_config.hidden_activation"));
  msg = message_of_parse(R"({"model_type": "qwen2", "vocab_size": 0})");
  DOCTEST_CHECK(contains(msg, "vocab_size"));
  msg = message_of_parse(R"([1, 2])");
  DOCTEST_CHECK(contains(msg, "object"));
  DOCTEST_CHECK_THROWS_AS(parse_config_json("{", "c"), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(kalm::model::parse_config_file("/nonexistent/config.json"), kalm::IoError);
}

DOCTEST_TEST_CASE("config: integers out of range are refused, not cast (fuzz_config_json)") {
  // Found by tests/fuzz/fuzz_config_json (seed corpus: regression_uint64_id.json):
  // 2^64 - 1 reads as the double 1.8e19, which was cast to int64 before its
  // range was checked (undefined behaviour, reported by UBSan).
  DOCTEST_CHECK(message_of_parse(R"({"model_type": "qwen2", "bos_token_id": 18446744073709551615})") ==
                "dir/config.json: bos_token_id: expected an integer");
  DOCTEST_CHECK(message_of_parse(R"({"model_type": "qwen2", "hidden_size": -1e300})") ==
                "dir/config.json: hidden_size: expected an integer");
  DOCTEST_CHECK(parse_config_json(R"({"model_type": "qwen2", "hidden_size": 64.0, "num_attention_heads": 2,
                                      "num_hidden_layers": 1})", "c").hidden_size == 64);
  // A layer count is refused before layer_types is built from it (seed corpus:
  // regression_layer_count.json): 1e11 layers used to be a 100 GB allocation.
  DOCTEST_CHECK(message_of_parse(R"({"model_type": "qwen2", "num_hidden_layers": 100000000000})") ==
                "dir/config.json: num_hidden_layers: 100000000000 is more than kalm supports (4096)");
  DOCTEST_CHECK(message_of_parse(R"({"model_type": "gemma3", "text_config": {"num_hidden_layers": 4097}})") ==
                "dir/config.json: text_config.num_hidden_layers: 4097 is more than kalm supports (4096)");
  auto c = parse_config_json(R"({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 2,
                                 "num_hidden_layers": 4096})", "c");
  DOCTEST_CHECK(c.layer_types.size() == 4096);
  c.num_hidden_layers = 4097;
  c.layer_types.resize(4097);
  DOCTEST_CHECK_THROWS_WITH_AS(kalm::model::validate_config(c),
                               "c: num_hidden_layers 4097 is more than kalm supports (4096)", ModelError);
}

DOCTEST_TEST_CASE("config: config_to_json writes a huge rope_theta so that it reads back (fuzz_config_json)") {
  // Found by tests/fuzz/fuzz_config_json (seed corpus: regression_rope_theta.json):
  // the shortest form of 1.088888888888888e20 is the integer "108888888888888800000",
  // which kalm's JSON reader refuses (past 64 bits): the export did not load.
  const auto c = parse_config_json(R"({"model_type": "qwen2", "hidden_size": 32, "num_attention_heads": 4,
                                       "num_hidden_layers": 2, "rope_theta": 108888888888888800000.0})", "c");
  const std::string json = kalm::model::config_to_json(c, AttentionMode::Causal);
  DOCTEST_CHECK(contains(json, "\"rope_theta\": 1.088888888888888e+20,"));
  DOCTEST_CHECK(parse_config_json(json, "written").rope_theta == c.rope_theta);
}

DOCTEST_TEST_CASE("config: config_to_json round-trips") {
  const auto files = {"qwen2_causal", "qwen2_bidir", "gemma3_causal", "gemma3_bidir"};
  for (const char* name : files) {
    const std::string fixture_name = name;
    DOCTEST_CAPTURE(fixture_name);
    const auto c = kalm::model::parse_config_file(kalm_model_test::fixture(name) + "/config.json");
    const std::string json = kalm::model::config_to_json(c, c.default_attention(), "bfloat16");
    const auto r = parse_config_json(json, "saved");
    DOCTEST_CHECK(r.architecture == c.architecture);
    DOCTEST_CHECK(r.hidden_size == c.hidden_size);
    DOCTEST_CHECK(r.num_hidden_layers == c.num_hidden_layers);
    DOCTEST_CHECK(r.num_attention_heads == c.num_attention_heads);
    DOCTEST_CHECK(r.num_key_value_heads == c.num_key_value_heads);
    DOCTEST_CHECK(r.head_dim == c.head_dim);
    DOCTEST_CHECK(r.intermediate_size == c.intermediate_size);
    DOCTEST_CHECK(r.vocab_size == c.vocab_size);
    DOCTEST_CHECK(r.rms_norm_eps == c.rms_norm_eps);
    DOCTEST_CHECK(r.rope_theta == c.rope_theta);
    DOCTEST_CHECK(r.rope_scaling.type == c.rope_scaling.type);
    DOCTEST_CHECK(r.rope_scaling.factor == c.rope_scaling.factor);
    DOCTEST_CHECK(r.rope_local_base_freq == c.rope_local_base_freq);
    DOCTEST_CHECK(r.sliding_window == c.sliding_window);
    DOCTEST_CHECK((r.layer_types == c.layer_types));
    DOCTEST_CHECK(r.query_pre_attn_scalar == c.query_pre_attn_scalar);
    DOCTEST_CHECK(r.attn_logit_softcapping == c.attn_logit_softcapping);
    DOCTEST_CHECK(r.tie_word_embeddings == c.tie_word_embeddings);
    DOCTEST_CHECK(r.default_attention() == c.default_attention());
    DOCTEST_CHECK(r.torch_dtype == "bfloat16");
  }
  // The gemma3_causal layer pattern is periodic: older transformers get it too.
  const auto g = kalm::model::parse_config_file(kalm_model_test::fixture("gemma3_causal") + "/config.json");
  DOCTEST_CHECK(kalm::model::config_to_json(g, AttentionMode::Causal).find("\"sliding_window_pattern\": 3") !=
                std::string::npos);
}

DOCTEST_TEST_CASE("config: transformers 5 layout (rope_parameters, dtype) for Qwen2 and Gemma3") {
  // As transformers 5.23 saves Qwen2Config(rope_theta=1e6).
  const auto q = parse_config_json(R"({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_hidden_layers": 2, "layer_types": ["full_attention", "full_attention"],
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "dtype": "bfloat16"})",
                                   "config.json");
  DOCTEST_CHECK(q.rope_theta == 1e6);
  DOCTEST_CHECK(q.rope_scaling.type == "default");
  DOCTEST_CHECK(q.torch_dtype == "bfloat16");
  const auto ql = parse_config_json(R"({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
    "rope_parameters": {"rope_theta": 5e5, "rope_type": "linear", "factor": 2.0}})",
                                    "config.json");
  DOCTEST_CHECK(ql.rope_theta == 5e5);
  DOCTEST_CHECK(ql.rope_scaling.type == "linear");
  DOCTEST_CHECK(ql.rope_scaling.factor == 2.0);
  // Gemma3: one entry per layer type; the sliding layers' base and scaling too.
  const auto g = parse_config_json(R"({"model_type": "gemma3_text", "num_hidden_layers": 3,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    "rope_parameters": {"full_attention": {"factor": 8.0, "rope_theta": 1000000.0, "rope_type": "linear"},
                        "sliding_attention": {"rope_theta": 20000.0, "rope_type": "default"}}})",
                                   "config.json");
  DOCTEST_CHECK(g.rope_theta == 1e6);
  DOCTEST_CHECK(g.rope_scaling.type == "linear");
  DOCTEST_CHECK(g.rope_scaling.factor == 8.0);
  DOCTEST_CHECK(g.rope_local_base_freq == 20000.0);
  DOCTEST_CHECK(g.rope_local_scaling.type == "default");
  const auto gl = parse_config_json(R"({"model_type": "gemma3_text", "num_hidden_layers": 1,
    "rope_parameters": {"sliding_attention": {"rope_theta": 10000.0, "rope_type": "linear", "factor": 2.0}}})",
                                    "config.json");
  DOCTEST_CHECK(gl.rope_local_scaling.factor == 2.0);
  DOCTEST_CHECK(gl.rope_theta == 1e6);  // the full layers keep transformers' default
  // The multimodal wrapper: inside text_config.
  const auto gw = parse_config_json(R"({"model_type": "gemma3", "text_config": {"num_hidden_layers": 2,
    "rope_parameters": {"full_attention": {"rope_theta": 3e5, "rope_type": "default"},
                        "sliding_attention": {"rope_theta": 7e3, "rope_type": "default"}}}})",
                                    "config.json");
  DOCTEST_CHECK(gw.rope_theta == 3e5);
  DOCTEST_CHECK(gw.rope_local_base_freq == 7e3);
  // Both layouts that agree are fine (kalm's own exports say both).
  const auto both = parse_config_json(R"({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
    "rope_theta": 1e6, "rope_scaling": null, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}})",
                                      "config.json");
  DOCTEST_CHECK(both.rope_theta == 1e6);
}

DOCTEST_TEST_CASE("config: transformers 5 refusals name the file and the key") {
  std::string msg = message_of_parse(R"({"model_type": "qwen2",
    "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}})");
  DOCTEST_CHECK(contains(msg, "dir/config.json: rope_parameters.rope_type: unsupported rope type \"yarn\""));
  msg = message_of_parse(R"({"model_type": "gemma3_text",
    "rope_parameters": {"full_attention": {"rope_type": "dynamic", "factor": 2.0}}})");
  DOCTEST_CHECK(contains(msg, "dir/config.json: rope_parameters.full_attention.rope_type: unsupported rope type"));
  msg = message_of_parse(R"({"model_type": "qwen2",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5}})");
  DOCTEST_CHECK(contains(msg, "dir/config.json: rope_parameters.partial_rotary_factor: kalm does not implement"));
  msg = message_of_parse(R"({"model_type": "gemma3_text",
    "rope_parameters": {"full_attention": {"rope_theta": 1e6}, "chunked_attention": {"rope_theta": 1e4}}})");
  DOCTEST_CHECK(contains(msg, "dir/config.json: rope_parameters.chunked_attention: unknown layer type"));
  msg = message_of_parse(R"({"model_type": "gemma3_text", "rope_parameters": {"rope_theta": 1e6}})");
  DOCTEST_CHECK(contains(msg, "dir/config.json: rope_parameters: expected one entry per layer type"));
  msg = message_of_parse(R"({"model_type": "qwen2", "rope_parameters": {"rope_type": "linear"}})");
  DOCTEST_CHECK(contains(msg, "linear scaling needs a \"factor\""));
  msg = message_of_parse(R"({"model_type": "gemma3_text", "is_causal": false})");
  DOCTEST_CHECK(contains(msg, "dir/config.json: is_causal: false on gemma3 is not supported"));
  msg = message_of_parse(R"({"model_type": "qwen2", "rope_parameters": 3})");
  DOCTEST_CHECK(contains(msg, "dir/config.json: rope_parameters: expected an object"));
  // Two layouts that disagree: transformers 4 and 5 would run different models.
  msg = message_of_parse(R"({"model_type": "qwen2", "rope_theta": 1e4,
    "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}})");
  DOCTEST_CHECK(contains(msg, "\"rope_theta\" (10000.000000) and \"rope_parameters.rope_theta\" (1000000.000000) disagree"));
  msg = message_of_parse(R"({"model_type": "gemma3_text", "rope_local_base_freq": 1e4,
    "rope_parameters": {"sliding_attention": {"rope_theta": 2e4, "rope_type": "default"}}})");
  DOCTEST_CHECK(contains(msg, "\"rope_local_base_freq\""));
  msg = message_of_parse(R"({"model_type": "gemma3_text", "rope_scaling": {"rope_type": "linear", "factor": 8},
    "rope_parameters": {"full_attention": {"rope_theta": 1e6, "rope_type": "default"}}})");
  DOCTEST_CHECK(contains(msg, "\"rope_scaling\" (linear x8.000000) and \"rope_parameters.full_attention\" (default) disagree"));
}

DOCTEST_TEST_CASE("config: config_to_json writes transformers 4's and 5's keys, which agree") {
  const auto g = kalm::model::parse_config_file(kalm_model_test::fixture("gemma3_causal") + "/config.json");
  const std::string json = kalm::model::config_to_json(g, AttentionMode::Causal, "float32");
  DOCTEST_CHECK(contains(json, "\"rope_parameters\": {\"full_attention\": {\"rope_theta\": "));
  DOCTEST_CHECK(contains(json, "\"sliding_attention\": {\"rope_theta\": "));
  DOCTEST_CHECK(contains(json, "\"dtype\": \"float32\""));
  DOCTEST_CHECK(contains(json, "\"torch_dtype\": \"float32\""));
  DOCTEST_CHECK(contains(json, "\"rope_local_base_freq\": "));
  const auto r = parse_config_json(json, "saved");  // would throw if the two layouts disagreed
  DOCTEST_CHECK(r.rope_scaling.factor == g.rope_scaling.factor);
  const auto q = kalm::model::parse_config_file(kalm_model_test::fixture("qwen2_bidir") + "/config.json");
  const std::string qj = kalm::model::config_to_json(q, AttentionMode::Bidirectional);
  DOCTEST_CHECK(contains(qj, "\"rope_parameters\": {\"rope_theta\": 1e+06, \"rope_type\": \"default\"}"));
  DOCTEST_CHECK(contains(qj, "\"layer_types\": [\"full_attention\", \"full_attention\"]"));
  DOCTEST_CHECK(contains(qj, "\"is_causal\": false"));  // what transformers 5 reads for Qwen2
  DOCTEST_CHECK(!contains(json, "is_causal"));          // Gemma3 reads use_bidirectional_attention
  DOCTEST_CHECK(parse_config_json(qj, "saved").rope_theta == 1e6);
}

DOCTEST_TEST_CASE("config: attention mode names") {
  DOCTEST_CHECK(kalm::model::parse_attention_mode("causal") == AttentionMode::Causal);
  DOCTEST_CHECK(kalm::model::parse_attention_mode("bidirectional") == AttentionMode::Bidirectional);
  DOCTEST_CHECK(kalm::model::attention_mode_name(AttentionMode::Bidirectional) == "bidirectional");
  DOCTEST_CHECK_THROWS_AS(kalm::model::parse_attention_mode("bi"), kalm::UsageError);
}
