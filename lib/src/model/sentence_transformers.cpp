#include "kalm/model/sentence_transformers.h"

#include <filesystem>

#include "json_util.h"
#include "kalm/error.h"

namespace kalm::model {

namespace fs = std::filesystem;
using detail::json_as_bool;
using detail::json_as_string;
using detail::json_field;
using detail::JsonElement;

namespace {

constexpr const char* kModulesName = "modules.json";
constexpr const char* kStConfigName = "config_sentence_transformers.json";
// Module classes by their last name: sentence-transformers 3 writes
// "sentence_transformers.models.Pooling", 6 writes
// "sentence_transformers.sentence_transformer.modules.pooling.Pooling".
enum class ModuleKind { Transformer, Pooling, Normalize, Other };
ModuleKind module_kind(const std::string& type) {
  if (type.rfind("sentence_transformers.", 0) != 0) return ModuleKind::Other;
  const std::string name = type.substr(type.rfind('.') + 1);
  if (name == "Transformer") return ModuleKind::Transformer;
  if (name == "Pooling") return ModuleKind::Pooling;
  if (name == "Normalize") return ModuleKind::Normalize;
  return ModuleKind::Other;
}
constexpr const char* kDefaultPoolingDir = "1_Pooling";
constexpr const char* kStBertConfigName = "sentence_bert_config.json";

std::vector<SentenceTransformersModule> read_modules(const std::string& path) {
  simdjson::dom::parser parser;
  simdjson::padded_string buffer;
  JsonElement doc = detail::load_json_file(path, parser, buffer);
  const std::string ctx = display_name(path) + ":";
  simdjson::dom::array arr;
  if (doc.get_array().get(arr) != simdjson::SUCCESS)
    throw ModelError(display_name(path) + ": expected a JSON array of modules");
  std::vector<SentenceTransformersModule> out;
  std::size_t i = 0;
  for (JsonElement e : arr) {
    const std::string here = display_name(path) + ": [" + std::to_string(i++) + "]";
    if (!detail::json_is_object(e)) throw ModelError(here + ": expected an object");
    SentenceTransformersModule m;
    m.idx = detail::json_opt_int(e, "idx", here).value_or(static_cast<std::int64_t>(i - 1));
    m.name = detail::json_opt_string(e, "name", here).value_or("");
    m.path = detail::json_opt_string(e, "path", here).value_or("");
    auto type = detail::json_opt_string(e, "type", here);
    if (!type) throw ModelError(here + ": module without a \"type\"");
    m.type = *type;
    if (m.path.find("..") != std::string::npos || (!m.path.empty() && m.path[0] == '/'))
      throw ModelError(here + ".path: \"" + m.path + "\" must stay inside the model directory");
    // A module kalm does not run (Dense, LayerNorm, a custom one) would change
    // every embedding: refuse rather than skip it.
    if (module_kind(m.type) == ModuleKind::Other)
      throw ModelError(here + ".type: module \"" + m.type +
                       "\" is not supported (kalm runs Transformer, Pooling and Normalize modules)");
    out.push_back(std::move(m));
  }
  return out;
}

void read_pooling(const std::string& path, SentenceTransformersConfig& st) {
  simdjson::dom::parser parser;
  simdjson::padded_string buffer;
  JsonElement doc = detail::load_json_file(path, parser, buffer);
  const std::string ctx = display_name(path) + ":";
  if (!detail::json_is_object(doc)) throw ModelError(display_name(path) + ": expected a JSON object");
  struct Mode {
    const char* key;
    std::optional<Pooling> pooling;  // nullopt: a mode kalm does not compute
  };
  const Mode modes[] = {
      {"pooling_mode_mean_tokens", Pooling::Mean},
      {"pooling_mode_lasttoken", Pooling::LastToken},
      {"pooling_mode_cls_token", Pooling::Cls},
      {"pooling_mode_max_tokens", std::nullopt},
      {"pooling_mode_mean_sqrt_len_tokens", std::nullopt},
      {"pooling_mode_weightedmean_tokens", std::nullopt},
  };
  std::vector<std::string> on;
  for (const Mode& m : modes) {
    if (!detail::json_opt_bool(doc, m.key, ctx).value_or(false)) continue;
    if (!m.pooling)
      throw ModelError(display_name(path) + ": " + m.key + " is not supported (kalm pools by mean, last token or cls)");
    on.push_back(m.key);
    st.pooling = m.pooling;
  }
  // sentence-transformers 6 writes {"pooling_mode": "mean"} (or a list of
  // modes, concatenated) instead of the flags.
  if (auto value = json_field(doc, "pooling_mode")) {
    std::vector<std::string> names;
    simdjson::dom::array list;
    if (value->get_array().get(list) == simdjson::SUCCESS) {
      for (JsonElement e : list) names.push_back(json_as_string(e, display_name(path) + ": pooling_mode[]"));
    } else {
      names.push_back(json_as_string(*value, display_name(path) + ": pooling_mode"));
    }
    for (const auto& name : names) {
      if (name != "mean" && name != "lasttoken" && name != "cls")
        throw ModelError(display_name(path) + ": pooling_mode \"" + name +
                         "\" is not supported (kalm pools by mean, lasttoken or cls)");
      st.pooling = parse_pooling(name);
      on.push_back("pooling_mode " + name);
    }
  }
  if (on.size() > 1)
    throw ModelError(display_name(path) + ": several pooling modes are on (" + on[0] + ", " + on[1] +
                     "); kalm computes exactly one");
  if (on.empty()) throw ModelError(display_name(path) + ": no pooling mode is on");
  st.word_embedding_dimension = detail::json_opt_int(doc, "word_embedding_dimension", ctx);
  if (!st.word_embedding_dimension) st.word_embedding_dimension = detail::json_opt_int(doc, "embedding_dimension", ctx);
  st.include_prompt = detail::json_opt_bool(doc, "include_prompt", ctx).value_or(true);
}

void read_st_config(const std::string& path, SentenceTransformersConfig& st) {
  simdjson::dom::parser parser;
  simdjson::padded_string buffer;
  JsonElement doc = detail::load_json_file(path, parser, buffer);
  const std::string ctx = display_name(path) + ":";
  if (!detail::json_is_object(doc)) throw ModelError(display_name(path) + ": expected a JSON object");
  if (auto prompts = json_field(doc, "prompts")) {
    simdjson::dom::object obj;
    if (prompts->get_object().get(obj) != simdjson::SUCCESS)
      throw ModelError(display_name(path) + ": prompts: expected an object");
    for (auto kv : obj) {
      const std::string key(kv.key);
      st.prompts[key] = json_as_string(kv.value, display_name(path) + ": prompts." + key);
    }
  }
  st.default_prompt_name = detail::json_opt_string(doc, "default_prompt_name", ctx);
  if (st.default_prompt_name && !st.prompts.count(*st.default_prompt_name))
    throw ModelError(display_name(path) + ": default_prompt_name \"" + *st.default_prompt_name +
                     "\" is not one of the prompts");
  st.similarity_fn_name = detail::json_opt_string(doc, "similarity_fn_name", ctx);
}

std::optional<std::int64_t> read_st_bert_config(const std::string& path) {
  simdjson::dom::parser parser;
  simdjson::padded_string buffer;
  JsonElement doc = detail::load_json_file(path, parser, buffer);
  const std::string ctx = display_name(path) + ":";
  if (!detail::json_is_object(doc)) throw ModelError(display_name(path) + ": expected a JSON object");
  // Texts lowercased by sentence-transformers but not by kalm would embed differently.
  if (detail::json_opt_bool(doc, "do_lower_case", ctx).value_or(false))
    throw ModelError(display_name(path) + ": do_lower_case is true (sentence-transformers lowercases every text), "
                     "which kalm does not implement; embeddings would differ from sentence-transformers'");
  // sentence-transformers 6 saves modality_config; a "message" entry (written
  // when the tokenizer has a chat template) makes it render every text through
  // that template before tokenising, which kalm does not do.
  JsonElement modalities;
  if (doc.at_key("modality_config").get(modalities) == simdjson::SUCCESS && detail::json_is_object(modalities)) {
    JsonElement message;
    if (modalities.at_key("message").get(message) == simdjson::SUCCESS)
      throw ModelError(display_name(path) + ": modality_config has \"message\": sentence-transformers renders every "
                       "text through the tokenizer's chat template, which kalm does not implement, so embeddings would "
                       "differ from sentence-transformers'; without that entry both embed the plain text");
  }
  auto max_seq_length = detail::json_opt_int(doc, "max_seq_length", ctx);
  if (max_seq_length && *max_seq_length <= 0)
    throw ModelError(display_name(path) + ": max_seq_length must be a positive integer, got " +
                     std::to_string(*max_seq_length));
  return max_seq_length;
}

}  // namespace

bool SentenceTransformersConfig::present() const {
  return !modules.empty() || pooling.has_value() || !prompts.empty() || default_prompt_name ||
         similarity_fn_name || max_seq_length;
}

std::optional<std::int64_t> read_max_seq_length(const std::string& dir) {
  const fs::path path = fs::path(dir) / kStBertConfigName;
  if (!fs::exists(path)) return std::nullopt;
  return read_st_bert_config(path.string());
}

SentenceTransformersConfig read_sentence_transformers(const std::string& dir) {
  SentenceTransformersConfig st;
  const fs::path root(dir);
  std::string pooling_dir = kDefaultPoolingDir;
  bool pooling_listed = false;
  const fs::path modules = root / kModulesName;
  if (fs::exists(modules)) {
    st.modules = read_modules(modules.string());
    for (const auto& m : st.modules) {
      if (module_kind(m.type) == ModuleKind::Pooling) {
        pooling_dir = m.path;
        pooling_listed = true;
      } else if (module_kind(m.type) == ModuleKind::Normalize) {
        st.normalize = true;
      }
    }
  }
  const fs::path pooling = root / pooling_dir / "config.json";
  if (fs::exists(pooling) && (pooling_listed || st.modules.empty())) {
    read_pooling(pooling.string(), st);
  } else if (pooling_listed) {
    throw ModelError(display_name(modules.string()) + ": the Pooling module's " +
                     (root / pooling_dir / "config.json").string() + " does not exist");
  }
  const fs::path st_config = root / kStConfigName;
  if (fs::exists(st_config)) read_st_config(st_config.string(), st);
  st.max_seq_length = read_max_seq_length(dir);
  return st;
}

}  // namespace kalm::model
