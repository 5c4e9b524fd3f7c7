#include "tokenizer_config.h"

#include <simdjson.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "hf_json.h"
#include "kalm/error.h"

namespace kalm::text::detail {

namespace {

// A special token is either "<s>" or an AddedToken dict {"content": "<s>", ...}.
std::optional<std::string> token_field(JsonElement root, std::string_view key, const std::string& ctx) {
  auto v = json_field(root, key);
  if (!v) return std::nullopt;
  const std::string c = json_path(ctx, key);
  if (v->is_string()) return std::string(json_as_string(*v, c));
  return std::string(json_string(*v, "content", c));
}

// transformers writes model_max_length as the integer 1000000000000000019884624838656
// (int(1e30)), which simdjson rejects as a big integer: numbers of 20+ digits
// outside strings get a ".0" so that they parse as doubles.
std::string widen_big_integers(std::string_view json) {
  std::string out;
  out.reserve(json.size() + 8);
  bool in_string = false;
  std::size_t i = 0;
  while (i < json.size()) {
    const char c = json[i];
    if (in_string) {
      out.push_back(c);
      if (c == '\\' && i + 1 < json.size()) {
        out.push_back(json[++i]);
      } else if (c == '"') {
        in_string = false;
      }
      ++i;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out.push_back(c);
      ++i;
      continue;
    }
    if (c >= '0' && c <= '9' && (i == 0 || !(json[i - 1] >= '0' && json[i - 1] <= '9'))) {
      std::size_t j = i;
      while (j < json.size() && json[j] >= '0' && json[j] <= '9') ++j;
      out.append(json, i, j - i);
      const bool fraction = j < json.size() && (json[j] == '.' || json[j] == 'e' || json[j] == 'E');
      if (j - i >= 20 && !fraction) out += ".0";
      i = j;
      continue;
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

}  // namespace

namespace {

// The class name without transformers' "Fast" suffix.
std::string slow_class_name(std::string cls) {
  const std::string fast = "Fast";
  if (cls.size() > fast.size() && cls.compare(cls.size() - fast.size(), fast.size(), fast) == 0)
    cls.resize(cls.size() - fast.size());
  return cls;
}

}  // namespace

bool TokenizerConfig::rebuilds_bos_eos_template() const {
  if (!add_bos_token && !add_eos_token) return false;
  const std::string cls = slow_class_name(tokenizer_class);
  return cls == "LlamaTokenizer" || cls == "CodeLlamaTokenizer" || cls == "GemmaTokenizer";
}

bool TokenizerConfig::converts_spm_like_llama() const {
  const std::string cls = slow_class_name(tokenizer_class);
  return cls == "LlamaTokenizer" || cls == "CodeLlamaTokenizer";
}

TokenizerConfig parse_tokenizer_config(std::string_view json, const std::string& source) {
  TokenizerConfig config;
  config.source = source;
  if (json.empty()) return config;
  simdjson::dom::parser parser;
  simdjson::padded_string padded(widen_big_integers(json));
  simdjson::dom::element root;
  if (auto err = parser.parse(padded).get(root))
    throw ModelError(source + ": not valid JSON: " + simdjson::error_message(err));
  json_object(root, source);
  if (auto c = json_opt_string(root, "tokenizer_class", source)) config.tokenizer_class = std::string(*c);
  config.bos_token = token_field(root, "bos_token", source);
  config.eos_token = token_field(root, "eos_token", source);
  config.pad_token = token_field(root, "pad_token", source);
  config.unk_token = token_field(root, "unk_token", source);
  if (auto b = json_field(root, "add_bos_token")) config.add_bos_token = json_as_bool(*b, source + ".add_bos_token");
  if (auto b = json_field(root, "add_eos_token")) config.add_eos_token = json_as_bool(*b, source + ".add_eos_token");
  // null means "unset" for both (transformers then defaults to true).
  if (auto b = json_field(root, "legacy"); b && !json_is_null(*b)) config.legacy = json_as_bool(*b, source + ".legacy");
  if (auto b = json_field(root, "add_prefix_space"); b && !json_is_null(*b))
    config.add_prefix_space = json_as_bool(*b, source + ".add_prefix_space");
  if (auto m = json_field(root, "model_max_length")) {
    // transformers writes 1e30 (VERY_LARGE_INTEGER) for "no limit": keep only real limits.
    double v;
    if (m->get_double().get(v) == simdjson::SUCCESS && v >= 1 && v < 1e12) {
      config.model_max_length = static_cast<std::size_t>(v);
    } else {
      int64_t i;
      if (m->get_int64().get(i) == simdjson::SUCCESS && i >= 1 && i < 1000000000000LL)
        config.model_max_length = static_cast<std::size_t>(i);
    }
  }
  return config;
}

std::string read_model_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) throw ModelError(path + ": read error");
  return buf.str();
}

}  // namespace kalm::text::detail
