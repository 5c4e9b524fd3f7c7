#include "kalm/model/config.h"

#include <cmath>
#include <map>

#include "json_util.h"
#include "kalm/error.h"
#include "kalm/io/json_writer.h"

namespace kalm::model {

using detail::json_as_string;
using detail::json_field;
using detail::json_opt_bool;
using detail::json_opt_double;
using detail::json_opt_int;
using detail::json_opt_string;
using detail::JsonElement;

namespace {

// transformers' defaults (Qwen2Config v4.47, Gemma3TextConfig v4.57).
constexpr std::int64_t kQwen2DefaultVocab = 151936;
constexpr std::int64_t kQwen2DefaultHidden = 4096;
constexpr std::int64_t kQwen2DefaultIntermediate = 22016;
constexpr std::int64_t kQwen2DefaultLayers = 32;
constexpr std::int64_t kQwen2DefaultHeads = 32;
constexpr std::int64_t kQwen2DefaultMaxPositions = 32768;
constexpr std::int64_t kGemma3DefaultVocab = 262208;
constexpr std::int64_t kGemma3DefaultHidden = 2304;
constexpr std::int64_t kGemma3DefaultIntermediate = 9216;
constexpr std::int64_t kGemma3DefaultLayers = 26;
constexpr std::int64_t kGemma3DefaultHeads = 8;
constexpr std::int64_t kGemma3DefaultKvHeads = 4;
constexpr std::int64_t kGemma3DefaultHeadDim = 256;
constexpr std::int64_t kGemma3DefaultMaxPositions = 131072;
constexpr std::int64_t kGemma3DefaultSlidingWindow = 4096;
constexpr std::int64_t kGemma3DefaultSlidingPattern = 6;
constexpr double kGemma3DefaultQueryScalar = 256.0;
// More layers than any real model has (they have tens, at most a few hundred).
// Checked before layer_types is built from the count, so a count such as 1e11
// is a ModelError, not a 100 GB allocation.
constexpr std::int64_t kMaxLayers = 4096;

[[noreturn]] void fail(const ModelConfig& c, const std::string& what) {
  throw ModelError(display_name(c.source.empty() ? std::string("config") : c.source) + ": " + what);
}

std::string field(const std::string& ctx, std::string_view key) {
  return ctx + (!ctx.empty() && ctx.back() == ':' ? " " : ".") + std::string(key);
}

// One RoPE setting as transformers writes it: v4's "rope_scaling" object
// ({"rope_type"|"type", "factor"}) or one entry of v5's "rope_parameters"
// ({"rope_type", "rope_theta", "factor"}). kalm implements the "default" and
// "linear" types; any other type, and any key it does not know, is refused
// with its name: a setting silently dropped changes every embedding.
struct RopeEntry {
  RopeScaling scaling;
  std::optional<double> theta;
};

RopeEntry parse_rope_entry(JsonElement v, const std::string& here, bool allow_theta) {
  if (!detail::json_is_object(v)) detail::json_fail(here, "expected an object");
  RopeEntry out;
  auto type = json_opt_string(v, "rope_type", here);
  if (!type) type = json_opt_string(v, "type", here);
  out.scaling.type = type.value_or("default");
  if (out.scaling.type != "default" && out.scaling.type != "linear")
    detail::json_fail(field(here, json_field(v, "rope_type") ? "rope_type" : "type"),
                      "unsupported rope type \"" + out.scaling.type + "\" (kalm supports \"default\" and \"linear\")");
  simdjson::dom::object object;
  if (v.get_object().get(object) != simdjson::SUCCESS) detail::json_fail(here, "expected an object");
  for (auto [key, value] : object) {
    // original_max_position_embeddings only matters to the types kalm refuses
    // (transformers 5 adds it to every converted v4 setting).
    if (key == "rope_type" || key == "type" || key == "original_max_position_embeddings") continue;
    if (key == "rope_theta" && allow_theta) continue;
    if (key == "factor" && out.scaling.type == "linear") continue;
    if (key == "factor" && detail::json_is_null(value)) continue;
    detail::json_fail(field(here, key), "kalm does not implement this RoPE setting for rope type \"" +
                                            out.scaling.type + "\"");
  }
  if (allow_theta) out.theta = json_opt_double(v, "rope_theta", here);
  if (out.scaling.type == "linear") {
    auto factor = json_opt_double(v, "factor", here);
    if (!factor) detail::json_fail(here, "linear scaling needs a \"factor\"");
    out.scaling.factor = *factor;
  }
  return out;
}

// transformers 4: "rope_scaling" (null or absent = none).
RopeScaling parse_rope_scaling(JsonElement obj, const std::string& ctx) {
  auto v = json_field(obj, "rope_scaling");
  if (!v) return {};
  return parse_rope_entry(*v, field(ctx, "rope_scaling"), /*allow_theta=*/false).scaling;
}

bool same_scaling(const RopeScaling& a, const RopeScaling& b) {
  return a.type == b.type && (a.type == "default" || a.factor == b.factor);
}

std::string describe(const RopeScaling& s) {
  return s.type == "linear" ? "linear x" + std::to_string(s.factor) : s.type;
}

// transformers 5: "rope_parameters", one entry for the model (Qwen2) or one per
// layer type ({"full_attention": {...}, "sliding_attention": {...}}, Gemma3).
// Called after the v4 fields are read: a v5 value replaces the v4 one, as in
// transformers 5, but a file that says both and disagrees is refused, since
// transformers 4 and 5 would then run different models.
void apply_rope_parameters(JsonElement obj, const std::string& ctx, ModelConfig& c) {
  auto v = json_field(obj, "rope_parameters");
  if (!v) return;
  const std::string here = field(ctx, "rope_parameters");
  if (!detail::json_is_object(*v)) detail::json_fail(here, "expected an object or null");
  const bool per_layer_type = json_field(*v, "full_attention") || json_field(*v, "sliding_attention");
  auto agree = [&](const char* v4_key, bool v4_present, double v4, double v5, const std::string& v5_key) {
    if (v4_present && v4 != v5)
      detail::json_fail(here, std::string("\"") + v4_key + "\" (" + std::to_string(v4) + ") and \"" + v5_key + "\" (" +
                                 std::to_string(v5) + ") disagree (transformers 4 reads the first, 5 the second)");
  };
  const bool v4_theta = static_cast<bool>(json_field(obj, "rope_theta"));
  const bool v4_scaling = static_cast<bool>(json_field(obj, "rope_scaling"));
  auto apply_global = [&](const RopeEntry& e, const std::string& where) {
    if (e.theta) {
      agree("rope_theta", v4_theta, c.rope_theta, *e.theta, where + ".rope_theta");
      c.rope_theta = *e.theta;
    }
    if (v4_scaling && !same_scaling(c.rope_scaling, e.scaling))
      detail::json_fail(here, "\"rope_scaling\" (" + describe(c.rope_scaling) + ") and \"" + where + "\" (" +
                                 describe(e.scaling) + ") disagree (transformers 4 reads the first, 5 the second)");
    c.rope_scaling = e.scaling;
  };
  if (!per_layer_type) {
    if (c.architecture == Architecture::Gemma3)
      detail::json_fail(here, "expected one entry per layer type (\"full_attention\", \"sliding_attention\"), "
                              "as transformers 5 writes for gemma3");
    apply_global(parse_rope_entry(*v, here, true), "rope_parameters");
    return;
  }
  simdjson::dom::object object;
  if (v->get_object().get(object) != simdjson::SUCCESS) detail::json_fail(here, "expected an object");
  for (auto [key, value] : object) {
    const std::string where = field(here, key);
    if (key == "full_attention") {
      apply_global(parse_rope_entry(value, where, true), "rope_parameters.full_attention");
    } else if (key == "sliding_attention") {
      RopeEntry e = parse_rope_entry(value, where, true);
      if (e.theta) {
        agree("rope_local_base_freq", static_cast<bool>(json_field(obj, "rope_local_base_freq")),
              c.rope_local_base_freq, *e.theta, "rope_parameters.sliding_attention.rope_theta");
        c.rope_local_base_freq = *e.theta;
      }
      c.rope_local_scaling = e.scaling;
    } else {
      detail::json_fail(where, "unknown layer type (expected full_attention or sliding_attention)");
    }
  }
}

std::vector<LayerAttention> parse_layer_types(JsonElement obj, const std::string& ctx) {
  std::vector<LayerAttention> out;
  auto v = json_field(obj, "layer_types");
  if (!v) return out;
  const std::string here = field(ctx, "layer_types");
  simdjson::dom::array arr;
  if (v->get_array().get(arr) != simdjson::SUCCESS) detail::json_fail(here, "expected an array");
  std::size_t i = 0;
  for (JsonElement e : arr) {
    const std::string name = json_as_string(e, here + "[" + std::to_string(i) + "]");
    if (name == "full_attention") {
      out.push_back(LayerAttention::Full);
    } else if (name == "sliding_attention") {
      out.push_back(LayerAttention::Sliding);
    } else {
      detail::json_fail(here + "[" + std::to_string(i) + "]",
                        "unsupported layer type \"" + name +
                            "\" (expected full_attention or sliding_attention)");
    }
    ++i;
  }
  return out;
}

// Fields both families share, with the family's defaults.
void parse_common(JsonElement obj, const std::string& ctx, ModelConfig& c) {
  auto get_int = [&](std::string_view key, std::int64_t fallback) {
    return json_opt_int(obj, key, ctx).value_or(fallback);
  };
  c.hidden_size = get_int("hidden_size", c.hidden_size);
  c.num_hidden_layers = get_int("num_hidden_layers", c.num_hidden_layers);
  if (c.num_hidden_layers > kMaxLayers)
    detail::json_fail(field(ctx, "num_hidden_layers"), std::to_string(c.num_hidden_layers) +
                                                           " is more than kalm supports (" +
                                                           std::to_string(kMaxLayers) + ")");
  c.num_attention_heads = get_int("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = get_int("num_key_value_heads", c.num_key_value_heads);
  c.intermediate_size = get_int("intermediate_size", c.intermediate_size);
  c.vocab_size = get_int("vocab_size", c.vocab_size);
  c.max_position_embeddings = get_int("max_position_embeddings", c.max_position_embeddings);
  c.rms_norm_eps = json_opt_double(obj, "rms_norm_eps", ctx).value_or(c.rms_norm_eps);
  c.rope_theta = json_opt_double(obj, "rope_theta", ctx).value_or(c.rope_theta);
  c.rope_scaling = parse_rope_scaling(obj, ctx);
  c.tie_word_embeddings = json_opt_bool(obj, "tie_word_embeddings", ctx).value_or(c.tie_word_embeddings);
  c.pad_token_id = json_opt_int(obj, "pad_token_id", ctx);
  c.bos_token_id = json_opt_int(obj, "bos_token_id", ctx);
  c.eos_token_id = json_opt_int(obj, "eos_token_id", ctx);
  bool bidirectional = json_opt_bool(obj, "use_bidirectional_attention", ctx).value_or(false);
  // transformers 5 runs any decoder bidirectionally under "is_causal": false
  // (llm2vec-style checkpoints say it this way too). On Gemma3 that also turns
  // the sliding window into |i - j| <= sliding_window (inclusive, not halved),
  // unlike use_bidirectional_attention: kalm implements only the latter.
  if (json_opt_bool(obj, "is_causal", ctx) == std::optional<bool>(false)) {
    if (c.architecture == Architecture::Gemma3)
      detail::json_fail(field(ctx, "is_causal"),
                        "false on gemma3 is not supported (transformers 5 then widens the sliding window to "
                        "sliding_window tokens each side); say \"use_bidirectional_attention\": true");
    bidirectional = true;
  }
  c.use_bidirectional_attention = bidirectional;
  c.layer_types = parse_layer_types(obj, ctx);
}

void parse_qwen2(JsonElement obj, const std::string& ctx, ModelConfig& c) {
  c.architecture = Architecture::Qwen2;
  c.vocab_size = kQwen2DefaultVocab;
  c.hidden_size = kQwen2DefaultHidden;
  c.intermediate_size = kQwen2DefaultIntermediate;
  c.num_hidden_layers = kQwen2DefaultLayers;
  c.num_attention_heads = kQwen2DefaultHeads;
  c.num_key_value_heads = -1;  // defaults to num_attention_heads below
  c.max_position_embeddings = kQwen2DefaultMaxPositions;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = false;
  parse_common(obj, ctx, c);
  if (c.num_key_value_heads == -1) c.num_key_value_heads = c.num_attention_heads;
  c.head_dim = json_opt_int(obj, "head_dim", ctx)
                   .value_or(c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0);
  c.hidden_activation = json_opt_string(obj, "hidden_act", ctx).value_or("silu");
  if (c.hidden_activation != "silu")
    detail::json_fail(field(ctx, "hidden_act"),
                      "unsupported activation \"" + c.hidden_activation + "\" for qwen2 (expected silu)");
  c.attention_bias = true;
  c.query_pre_attn_scalar = static_cast<double>(c.head_dim);
  if (json_opt_bool(obj, "use_sliding_window", ctx).value_or(false))
    detail::json_fail(field(ctx, "use_sliding_window"),
                      "sliding-window attention is not supported for qwen2");
  for (LayerAttention t : c.layer_types)
    if (t != LayerAttention::Full)
      detail::json_fail(field(ctx, "layer_types"),
                        "sliding-window attention is not supported for qwen2");
  if (c.layer_types.empty()) c.layer_types.assign(std::max<std::int64_t>(c.num_hidden_layers, 0), LayerAttention::Full);
  apply_rope_parameters(obj, ctx, c);
}

void parse_gemma3_text(JsonElement obj, const std::string& ctx, ModelConfig& c) {
  c.architecture = Architecture::Gemma3;
  c.vocab_size = kGemma3DefaultVocab;
  c.hidden_size = kGemma3DefaultHidden;
  c.intermediate_size = kGemma3DefaultIntermediate;
  c.num_hidden_layers = kGemma3DefaultLayers;
  c.num_attention_heads = kGemma3DefaultHeads;
  c.num_key_value_heads = kGemma3DefaultKvHeads;
  c.max_position_embeddings = kGemma3DefaultMaxPositions;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1'000'000.0;
  c.tie_word_embeddings = true;
  c.pad_token_id = 0;
  c.eos_token_id = 1;
  c.bos_token_id = 2;
  auto pad = c.pad_token_id, bos = c.bos_token_id, eos = c.eos_token_id;
  parse_common(obj, ctx, c);
  if (!json_field(obj, "pad_token_id")) c.pad_token_id = pad;
  if (!json_field(obj, "bos_token_id")) c.bos_token_id = bos;
  if (!json_field(obj, "eos_token_id")) c.eos_token_id = eos;
  c.head_dim = json_opt_int(obj, "head_dim", ctx).value_or(kGemma3DefaultHeadDim);
  c.hidden_activation = json_opt_string(obj, "hidden_activation", ctx).value_or("gelu_pytorch_tanh");
  if (c.hidden_activation != "gelu_pytorch_tanh")
    detail::json_fail(field(ctx, "hidden_activation"),
                      "unsupported activation \"" + c.hidden_activation +
                          "\" for gemma3 (expected gelu_pytorch_tanh)");
  c.attention_bias = json_opt_bool(obj, "attention_bias", ctx).value_or(false);
  c.query_pre_attn_scalar =
      json_opt_double(obj, "query_pre_attn_scalar", ctx).value_or(kGemma3DefaultQueryScalar);
  c.attn_logit_softcapping = json_opt_double(obj, "attn_logit_softcapping", ctx);
  c.final_logit_softcapping = json_opt_double(obj, "final_logit_softcapping", ctx);
  c.rope_local_base_freq = json_opt_double(obj, "rope_local_base_freq", ctx).value_or(10000.0);
  c.sliding_window = json_opt_int(obj, "sliding_window", ctx).value_or(kGemma3DefaultSlidingWindow);
  if (c.layer_types.empty()) {
    const std::int64_t pattern =
        json_opt_int(obj, "sliding_window_pattern", ctx).value_or(kGemma3DefaultSlidingPattern);
    if (pattern <= 0)
      detail::json_fail(field(ctx, "sliding_window_pattern"), "must be positive");
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i)
      c.layer_types.push_back((i + 1) % pattern ? LayerAttention::Sliding : LayerAttention::Full);
  }
  apply_rope_parameters(obj, ctx, c);
}

void require(bool ok, const ModelConfig& c, const std::string& what) {
  if (!ok) fail(c, what);
}

std::string num(double v) {
  std::string s;
  io::append_json_number(s, v);
  return s;
}

std::string str(std::string_view v) {
  std::string s;
  io::append_json_string(s, v);
  return s;
}

}  // namespace

AttentionMode ModelConfig::default_attention() const {
  return use_bidirectional_attention ? AttentionMode::Bidirectional : AttentionMode::Causal;
}

double ModelConfig::attention_scale() const {
  return 1.0 / std::sqrt(architecture == Architecture::Gemma3 ? query_pre_attn_scalar
                                                             : static_cast<double>(head_dim));
}

std::optional<std::int64_t> ModelConfig::attention_window(AttentionMode mode) const {
  bool any_sliding = false;
  for (LayerAttention t : layer_types) any_sliding = any_sliding || t == LayerAttention::Sliding;
  if (!any_sliding || !sliding_window) return std::nullopt;
  return mode == AttentionMode::Causal ? *sliding_window : *sliding_window / 2 + 1;
}

void validate_config(const ModelConfig& c) {
  require(c.hidden_size > 0, c, "hidden_size must be positive, got " + std::to_string(c.hidden_size));
  // Zero layers is a real model (token embeddings, final norm, pooling): the
  // cheapest point of a size ladder; transformers builds it too.
  require(c.num_hidden_layers >= 0, c,
          "num_hidden_layers must not be negative, got " + std::to_string(c.num_hidden_layers));
  require(c.num_hidden_layers <= kMaxLayers, c,
          "num_hidden_layers " + std::to_string(c.num_hidden_layers) + " is more than kalm supports (" +
              std::to_string(kMaxLayers) + ")");
  require(c.num_attention_heads > 0, c,
          "num_attention_heads must be positive, got " + std::to_string(c.num_attention_heads));
  require(c.num_key_value_heads > 0, c,
          "num_key_value_heads must be positive, got " + std::to_string(c.num_key_value_heads));
  require(c.num_attention_heads % c.num_key_value_heads == 0, c,
          "num_attention_heads (" + std::to_string(c.num_attention_heads) +
              ") is not a multiple of num_key_value_heads (" + std::to_string(c.num_key_value_heads) + ")");
  require(c.head_dim > 0 && c.head_dim % 2 == 0, c,
          "head_dim must be positive and even (rotary embedding), got " + std::to_string(c.head_dim));
  require(c.intermediate_size > 0, c,
          "intermediate_size must be positive, got " + std::to_string(c.intermediate_size));
  require(c.vocab_size > 0, c, "vocab_size must be positive, got " + std::to_string(c.vocab_size));
  require(c.rms_norm_eps > 0 && std::isfinite(c.rms_norm_eps), c, "rms_norm_eps must be positive");
  require(c.rope_theta > 0 && std::isfinite(c.rope_theta), c, "rope_theta must be positive");
  require(c.rope_scaling.type == "default" || c.rope_scaling.type == "linear", c,
          "unsupported rope_scaling type \"" + c.rope_scaling.type + "\"");
  require(c.rope_scaling.factor > 0 && std::isfinite(c.rope_scaling.factor), c,
          "rope_scaling.factor must be positive");
  require(c.rope_local_scaling.type == "default" || c.rope_local_scaling.type == "linear", c,
          "unsupported rope type \"" + c.rope_local_scaling.type + "\" for sliding_attention layers");
  require(c.rope_local_scaling.factor > 0 && std::isfinite(c.rope_local_scaling.factor), c,
          "rope_parameters.sliding_attention.factor must be positive");
  require(static_cast<std::int64_t>(c.layer_types.size()) == c.num_hidden_layers, c,
          "layer_types has " + std::to_string(c.layer_types.size()) + " entries but num_hidden_layers is " +
              std::to_string(c.num_hidden_layers));
  if (c.architecture == Architecture::Qwen2) {
    for (LayerAttention t : c.layer_types)
      require(t == LayerAttention::Full, c, "sliding-window attention is not supported for qwen2");
  } else {
    require(c.query_pre_attn_scalar > 0 && std::isfinite(c.query_pre_attn_scalar), c,
            "query_pre_attn_scalar must be positive");
    require(c.rope_local_base_freq > 0 && std::isfinite(c.rope_local_base_freq), c,
            "rope_local_base_freq must be positive");
    bool any_sliding = false;
    for (LayerAttention t : c.layer_types) any_sliding = any_sliding || t == LayerAttention::Sliding;
    if (any_sliding)
      require(c.sliding_window && *c.sliding_window > 0, c,
              "sliding_window must be positive for a model with sliding_attention layers");
  }
  if (c.attn_logit_softcapping)
    require(*c.attn_logit_softcapping > 0, c, "attn_logit_softcapping must be positive");
}

ModelConfig parse_config_json(std::string_view json, const std::string& source) {
  simdjson::dom::parser parser;
  simdjson::padded_string buffer;
  JsonElement doc = detail::parse_json_text(json, source, parser, buffer);
  const std::string ctx = display_name(source) + ":";
  if (!detail::json_is_object(doc)) throw ModelError(display_name(source) + ": expected a JSON object");

  ModelConfig c;
  c.source = source;
  auto type = json_opt_string(doc, "model_type", ctx);
  if (!type) throw ModelError(display_name(source) + ": no \"model_type\" field");
  c.model_type = *type;
  if (*type == "qwen2") {
    parse_qwen2(doc, ctx, c);
  } else if (*type == "gemma3_text") {
    parse_gemma3_text(doc, ctx, c);
  } else if (*type == "gemma3") {
    auto text = json_field(doc, "text_config");
    // transformers builds a default Gemma3TextConfig when text_config is absent.
    JsonElement empty_doc;
    simdjson::dom::parser empty_parser;
    simdjson::padded_string empty_buffer;
    if (!text) {
      empty_doc = detail::parse_json_text("{}", source, empty_parser, empty_buffer);
      text = empty_doc;
    }
    if (!detail::json_is_object(*text))
      throw ModelError(display_name(source) + ": text_config: expected an object");
    parse_gemma3_text(*text, ctx + " text_config", c);
    // The wrapper's own flags win where transformers reads them from it.
    if (auto tie = json_opt_bool(doc, "tie_word_embeddings", ctx)) c.tie_word_embeddings = *tie;
  } else {
    throw ModelError(display_name(source) + ": unsupported model_type \"" + *type +
                     "\" (kalm supports qwen2, gemma3_text, gemma3)");
  }
  if (auto dtype = json_opt_string(doc, "torch_dtype", ctx)) {
    c.torch_dtype = *dtype;
  } else if (auto dtype2 = json_opt_string(doc, "dtype", ctx)) {
    c.torch_dtype = *dtype2;  // transformers >= 4.56 writes "dtype"
  }
  validate_config(c);
  return c;
}

ModelConfig parse_config_file(const std::string& path) {
  simdjson::dom::parser parser;
  simdjson::padded_string buffer;
  detail::load_json_file(path, parser, buffer);  // IoError / FormatError naming the file
  return parse_config_json(std::string_view(buffer.data(), buffer.size()), path);
}

std::string_view architecture_name(Architecture architecture) {
  return architecture == Architecture::Qwen2 ? "qwen2" : "gemma3";
}

std::string_view attention_mode_name(AttentionMode mode) {
  return mode == AttentionMode::Causal ? "causal" : "bidirectional";
}

AttentionMode parse_attention_mode(std::string_view name) {
  if (name == "causal") return AttentionMode::Causal;
  if (name == "bidirectional") return AttentionMode::Bidirectional;
  throw UsageError("unknown attention \"" + std::string(name) + "\" (choose causal or bidirectional)");
}

std::string config_to_json(const ModelConfig& c, AttentionMode attention, const std::string& torch_dtype) {
  validate_config(c);
  std::map<std::string, std::string> f;  // key -> raw JSON value (sorted, as transformers writes)
  f["hidden_size"] = std::to_string(c.hidden_size);
  f["num_hidden_layers"] = std::to_string(c.num_hidden_layers);
  f["num_attention_heads"] = std::to_string(c.num_attention_heads);
  f["num_key_value_heads"] = std::to_string(c.num_key_value_heads);
  f["head_dim"] = std::to_string(c.head_dim);
  f["intermediate_size"] = std::to_string(c.intermediate_size);
  f["vocab_size"] = std::to_string(c.vocab_size);
  f["max_position_embeddings"] = std::to_string(c.max_position_embeddings);
  f["rms_norm_eps"] = num(c.rms_norm_eps);
  f["rope_theta"] = num(c.rope_theta);
  f["rope_scaling"] = c.rope_scaling.type == "default"
                          ? std::string("null")
                          : "{\"factor\": " + num(c.rope_scaling.factor) + ", \"rope_type\": " +
                                str(c.rope_scaling.type) + "}";
  // transformers 5's layout beside 4's (above): 5 reads rope_parameters and
  // dtype, 4 ignores them; both agree by construction.
  auto rope_entry = [](double theta, const RopeScaling& s) {
    std::string e = "{\"rope_theta\": " + num(theta) + ", \"rope_type\": " + str(s.type);
    if (s.type == "linear") e += ", \"factor\": " + num(s.factor);
    return e + "}";
  };
  f["rope_parameters"] = c.architecture == Architecture::Qwen2
                             ? rope_entry(c.rope_theta, c.rope_scaling)
                             : "{\"full_attention\": " + rope_entry(c.rope_theta, c.rope_scaling) +
                                   ", \"sliding_attention\": " +
                                   rope_entry(c.rope_local_base_freq, c.rope_local_scaling) + "}";
  f["tie_word_embeddings"] = c.tie_word_embeddings ? "true" : "false";
  f["use_bidirectional_attention"] = attention == AttentionMode::Bidirectional ? "true" : "false";
  // transformers 5 runs Qwen2 bidirectionally only under "is_causal": false
  // (it ignores use_bidirectional_attention there); Gemma3 reads the flag above.
  if (c.architecture == Architecture::Qwen2 && attention == AttentionMode::Bidirectional) f["is_causal"] = "false";
  const std::string dtype = torch_dtype.empty() ? c.torch_dtype : torch_dtype;
  if (!dtype.empty()) f["torch_dtype"] = f["dtype"] = str(dtype);
  if (c.pad_token_id) f["pad_token_id"] = std::to_string(*c.pad_token_id);
  if (c.bos_token_id) f["bos_token_id"] = std::to_string(*c.bos_token_id);
  if (c.eos_token_id) f["eos_token_id"] = std::to_string(*c.eos_token_id);
  std::string types = "[";
  for (std::size_t i = 0; i < c.layer_types.size(); ++i)
    types += std::string(i ? ", " : "") +
             (c.layer_types[i] == LayerAttention::Full ? "\"full_attention\"" : "\"sliding_attention\"");
  f["layer_types"] = types + "]";
  if (c.architecture == Architecture::Qwen2) {
    f["model_type"] = str("qwen2");
    f["architectures"] = "[\"Qwen2Model\"]";
    f["hidden_act"] = str(c.hidden_activation);
    f["use_sliding_window"] = "false";
  } else {
    f["model_type"] = str("gemma3_text");
    f["architectures"] = "[\"Gemma3TextModel\"]";
    f["hidden_activation"] = str(c.hidden_activation);
    f["attention_bias"] = c.attention_bias ? "true" : "false";
    f["query_pre_attn_scalar"] = num(c.query_pre_attn_scalar);
    f["rope_local_base_freq"] = num(c.rope_local_base_freq);
    f["attn_logit_softcapping"] = c.attn_logit_softcapping ? num(*c.attn_logit_softcapping) : "null";
    f["final_logit_softcapping"] = c.final_logit_softcapping ? num(*c.final_logit_softcapping) : "null";
    if (c.sliding_window) f["sliding_window"] = std::to_string(*c.sliding_window);
    // transformers < 4.53 reads only the periodic pattern: write it when one fits.
    for (std::int64_t p = 1; p <= c.num_hidden_layers; ++p) {
      bool fits = true;
      for (std::int64_t i = 0; i < c.num_hidden_layers && fits; ++i)
        fits = (c.layer_types[i] == LayerAttention::Sliding) == static_cast<bool>((i + 1) % p);
      if (fits) {
        f["sliding_window_pattern"] = std::to_string(p);
        break;
      }
    }
  }
  std::string out = "{\n";
  std::size_t i = 0;
  for (const auto& [key, value] : f) {
    out += "  " + str(key) + ": " + value + (++i < f.size() ? ",\n" : "\n");
  }
  return out + "}\n";
}

}  // namespace kalm::model
