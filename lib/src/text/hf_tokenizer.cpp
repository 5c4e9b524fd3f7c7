// The Hugging Face tokenizer.json tokenizer: added tokens -> normalizer ->
// pre-tokenizer -> model (BPE or Unigram) -> post-processor, and the reverse through the decoder.
#include <simdjson.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

#include "added_vocabulary.h"
#include "hf_components.h"
#include "kalm/error.h"
#include "kalm/text/tokenizer.h"
#include "kalm/text/unicode.h"
#include "subword_model.h"
#include "tokenizer_config.h"

namespace kalm::text {

namespace {

void check_dropout(double p) {
  if (!(p >= 0 && p <= 1)) throw UsageError("BPE dropout must be in [0, 1], got " + std::to_string(p));
}

using namespace detail;

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(JsonElement root, const TokenizerConfig& config, const std::string& name) {
    source_ = name;
    const std::string ctx = name;
    json_object(root, ctx);
    if (auto v = json_opt_string(root, "version", ctx); v && *v != "1.0")
      json_fail(ctx + ".version", "unknown tokenizer.json version \"" + std::string(*v) + "\"");
    if (auto n = json_field(root, "normalizer")) normalizer_ = make_normalizer(*n, ctx + ".normalizer");
    if (auto p = json_field(root, "pre_tokenizer"))
      pre_tokenizer_ = make_pre_tokenizer(*p, ctx + ".pre_tokenizer");
    model_ = make_subword_model(json_require(root, "model", ctx), ctx + ".model");
    if (auto d = json_field(root, "decoder")) decoder_ = make_decoder(*d, ctx + ".decoder");
    if (auto pp = json_field(root, "post_processor"))
      post_processor_ = make_post_processor(*pp, ctx + ".post_processor");
    // "truncation" and "padding" in the file are ignored, as transformers does unless
    // asked: EncodeOptions decides.

    std::vector<AddedToken> added;
    if (auto at = json_field(root, "added_tokens")) {
      std::size_t k = 0;
      for (JsonElement t : json_array(*at, ctx + ".added_tokens")) {
        const std::string tctx = ctx + ".added_tokens[" + std::to_string(k++) + "]";
        AddedToken tok;
        tok.content = std::string(json_string(t, "content", tctx));
        check_utf8(tok.content, tctx + ".content");
        tok.single_word = json_bool(t, "single_word", false, tctx);
        tok.lstrip = json_bool(t, "lstrip", false, tctx);
        tok.rstrip = json_bool(t, "rstrip", false, tctx);
        tok.normalized = json_bool(t, "normalized", true, tctx);
        tok.special = json_bool(t, "special", false, tctx);
        added.push_back(std::move(tok));
      }
    }
    std::size_t model_entries = 0;
    for (std::size_t id = 0; id < model_->id_limit(); ++id) {
      if (model_->id_to_token(static_cast<int32_t>(id))) ++model_entries;
    }
    const SubwordModel& model = *model_;
    added_.build(std::move(added), model_entries,
                 [&model](const std::string& s) { return model.token_to_id(s); },
                 normalizer_.get());
    id_limit_ = std::max<std::size_t>(model_->id_limit(),
                                      static_cast<std::size_t>(added_.max_id() + 1));

    apply_config(config);
    // HF emits a template's ids as written; an id that is no token would reach
    // the model as an id outside vocab_size() and could not be decoded.
    if (post_processor_) {
      std::vector<int32_t> ids;
      post_processor_->special_ids(ids);
      for (int32_t id : ids) {
        if (!id_to_token(id))
          json_fail(ctx + ".post_processor",
                    "adds token id " + std::to_string(id) + ", which is not in the vocabulary");
      }
    }
  }

  Encoding encode(std::string_view text, const EncodeOptions& options) const override {
    check_utf8(text, "text");
    const std::size_t n_special =
        options.add_special_tokens && post_processor_ ? post_processor_->added_tokens() : 0;
    std::optional<std::size_t> limit;
    if (options.max_length) {
      if (*options.max_length < n_special) {
        throw UsageError("max_length " + std::to_string(*options.max_length) +
                         " cannot hold the " + std::to_string(n_special) +
                         " special tokens of " + source_);
      }
      limit = *options.max_length - n_special;
    }
    Pieces pieces;
    added_.extract_and_normalize(text, normalizer_.get(), pieces);
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
    Encoding enc;
    enc.ids.reserve(text.size() / 3 + 4);
    check_dropout(options.bpe_dropout);
    // Seeded only for dropout: every other encode (kalm-embed's hot path) skips it.
    std::optional<DropoutRng> dropout_rng;
    if (options.bpe_dropout > 0) dropout_rng.emplace(options.dropout_seed);
    for (const Piece& p : pieces) {
      if (p.id >= 0) {
        enc.ids.push_back(p.id);
      } else if (dropout_rng && enc.ids.size() >= options.dropout_after) {
        model_->tokenize_with_dropout(p.text, enc.ids, options.bpe_dropout, *dropout_rng);
      } else {
        model_->tokenize(p.text, enc.ids);
      }
      // Stop early: the rest of a long document would be cut anyway.
      if (limit && enc.ids.size() > *limit) break;
    }
    if (limit && enc.ids.size() > *limit) {
      enc.ids.resize(*limit);
      enc.truncated = true;
    }
    if (post_processor_) post_processor_->process(enc.ids, options.add_special_tokens);
    return enc;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      std::string_view token;
      if (const AddedToken* t = added_.find_id(id)) {
        token = added_.decode_content(*t);
      } else if (const std::string_view* s = model_->id_to_token(id)) {
        token = *s;
      } else {
        throw FormatError("cannot decode token id " + std::to_string(id) + ": not in the vocabulary of " +
                          source_);
      }
      if (skip_special && added_.is_special(token)) continue;
      tokens.emplace_back(token);
    }
    if (!decoder_) {
      std::string out;
      for (std::size_t k = 0; k < tokens.size(); ++k) {
        if (k) out.push_back(' ');
        out += tokens[k];
      }
      return out;
    }
    decoder_->decode_chain(tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }

  std::size_t vocab_size() const override { return id_limit_; }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    if (auto id = added_.token_to_id(token)) return id;
    return model_->token_to_id(token);
  }

  std::optional<std::string> id_to_token(int32_t id) const override {
    if (const AddedToken* t = added_.find_id(id)) return std::string(added_.decode_content(*t));
    if (const std::string_view* s = model_->id_to_token(id)) return std::string(*s);
    return std::nullopt;
  }

  std::size_t num_special_tokens_added() const override {
    return post_processor_ ? post_processor_->added_tokens() : 0;
  }

 private:
  void apply_config(const TokenizerConfig& config) {
    const auto resolve = [&](const std::optional<std::string>& token,
                             const char* field) -> std::optional<int32_t> {
      if (!token) return std::nullopt;
      auto id = token_to_id(*token);
      if (!id) {
        throw ModelError(config.source + ": " + field + " \"" + *token +
                         "\" is not a token of " + source_);
      }
      return id;
    };
    pad_id_ = resolve(config.pad_token, "pad_token");
    bos_id_ = resolve(config.bos_token, "bos_token");
    eos_id_ = resolve(config.eos_token, "eos_token");
    unk_id_ = resolve(config.unk_token, "unk_token");
    model_max_length_ = config.model_max_length;
    // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from
    // add_bos_token / add_eos_token (update_post_processor).
    if (config.rebuilds_bos_eos_template()) {
      const bool add_bos = config.add_bos_token.value_or(true);
      const bool add_eos = config.add_eos_token.value_or(false);
      if (add_bos && !bos_id_) throw ModelError(config.source + ": add_bos_token is set but there is no bos_token");
      if (add_eos && !eos_id_) throw ModelError(config.source + ": add_eos_token is set but there is no eos_token");
      post_processor_ = make_bos_eos_processor(add_bos ? bos_id_ : std::nullopt,
                                               add_eos ? eos_id_ : std::nullopt);
    }
  }

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<SubwordModel> model_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<PostProcessor> post_processor_;
  AddedVocabulary added_;
  std::size_t id_limit_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> parse_hf_tokenizer_json(std::string_view tokenizer_json,
                                                   std::string_view tokenizer_config_json,
                                                   const std::string& source_name) {
  const detail::TokenizerConfig config =
      detail::parse_tokenizer_config(tokenizer_config_json, source_name + " (tokenizer_config.json)");
  simdjson::dom::parser parser;
  simdjson::padded_string padded(tokenizer_json);
  simdjson::dom::element root;
  if (auto err = parser.parse(padded).get(root)) {
    throw ModelError(source_name + ": not valid JSON: " + simdjson::error_message(err));
  }
  return std::make_unique<HfTokenizer>(root, config, source_name);
}

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& tokenizer_json_path,
                                                  const std::string& tokenizer_config_path) {
  const std::string json = detail::read_model_file(tokenizer_json_path);
  detail::TokenizerConfig config;
  if (!tokenizer_config_path.empty()) {
    config = detail::parse_tokenizer_config(detail::read_model_file(tokenizer_config_path), tokenizer_config_path);
  }
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  simdjson::dom::element root;
  if (auto err = parser.parse(padded).get(root)) {
    throw ModelError(tokenizer_json_path + ": not valid JSON: " + simdjson::error_message(err));
  }
  return std::make_unique<HfTokenizer>(root, config, tokenizer_json_path);
}

}  // namespace kalm::text
