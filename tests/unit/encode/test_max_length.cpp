// The token limit of the model-running tools: --max-length, else
// sentence-transformers' limit for the model (sentence_bert_config.json's
// max_seq_length, else the tokenizer's model_max_length capped at
// max_position_embeddings), else 512.

#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>

#include "kalm/encode/model_embedder.h"
#include "kalm/error.h"

using kalm::encode::kDefaultMaxLength;
using kalm::encode::resolve_max_length;

namespace {
const std::optional<std::int64_t> kUnset;
std::string fixtures(const std::string& rel) { return std::string(KALM_FIXTURES_DIR) + "/" + rel; }
}  // namespace

DOCTEST_TEST_CASE("resolve_max_length: the flag, else the model's, else 512") {
  DOCTEST_CHECK(kDefaultMaxLength == 512);
  DOCTEST_CHECK(resolve_max_length(kUnset, kUnset) == 512);
  DOCTEST_CHECK(resolve_max_length(kUnset, 24) == 24);
  DOCTEST_CHECK(resolve_max_length(kUnset, 8192) == 8192);
  DOCTEST_CHECK(resolve_max_length(100, 24) == 100);    // the flag wins, smaller or larger
  DOCTEST_CHECK(resolve_max_length(4096, 24) == 4096);
  DOCTEST_CHECK(resolve_max_length(7, kUnset) == 7);
  DOCTEST_CHECK_THROWS_AS(resolve_max_length(0, 24), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(resolve_max_length(-1, kUnset), kalm::UsageError);
}

DOCTEST_TEST_CASE("load_embedder carries the model's max_seq_length") {
  kalm::encode::EmbedderSettings settings;
  // Written by kalm-train: sentence_bert_config.json says 24.
  auto exported = kalm::encode::load_embedder(fixtures("export/model"), settings, /*require_tokenizer=*/true);
  DOCTEST_CHECK(exported.max_seq_length == 24);
  DOCTEST_CHECK(resolve_max_length(kUnset, exported.max_seq_length) == 24);
  DOCTEST_CHECK(exported.max_seq_length_source == "max_seq_length 24 from " + fixtures("export/model") +
                                                    "/sentence_bert_config.json");
  // A sentence-transformers model (modules.json) without sentence_bert_config.json
  // and without a tokenizer: config.json's max_position_embeddings, as
  // sentence-transformers caps it.
  auto capped = kalm::encode::load_embedder(fixtures("models/qwen2_causal"), settings, /*require_tokenizer=*/false);
  DOCTEST_CHECK(capped.max_seq_length == 128);
  DOCTEST_CHECK(capped.max_seq_length_source ==
                "max_position_embeddings 128 from " + fixtures("models/qwen2_causal") + "/config.json");
  // sentence-transformers 6 writes no max_seq_length: the tokenizer's
  // model_max_length (128) when below max_position_embeddings (256).
  auto v6 = kalm::encode::load_embedder(fixtures("models_v5/qwen2_bidir_last"), settings, /*require_tokenizer=*/true);
  DOCTEST_CHECK(v6.max_seq_length == 128);
  DOCTEST_CHECK(v6.max_seq_length_source ==
                "model_max_length 128 from " + fixtures("models_v5/qwen2_bidir_last") + "/tokenizer_config.json");
  DOCTEST_CHECK(v6.include_prompt);
  auto noprompt = kalm::encode::load_embedder(fixtures("models_v5/qwen2_causal_mean_noprompt"), settings, true);
  DOCTEST_CHECK(!noprompt.include_prompt);
}

DOCTEST_TEST_CASE("prompt_pool_skip: the prompt's tokens as sentence-transformers counts them") {
  kalm::encode::EmbedderSettings settings;
  auto noprompt = kalm::encode::load_embedder(fixtures("models_v5/qwen2_causal_mean_noprompt"), settings, true);
  const std::string prompt = "Instruct: find\n Query: ";
  kalm::text::EncodeOptions options;
  const auto ids = noprompt.tokenizer->encode(prompt, options).ids;
  DOCTEST_REQUIRE(!ids.empty());
  DOCTEST_CHECK(kalm::encode::prompt_pool_skip(noprompt, *noprompt.tokenizer, prompt) ==
                static_cast<std::int64_t>(ids.size()));
  DOCTEST_CHECK(kalm::encode::prompt_pool_skip(noprompt, *noprompt.tokenizer, "") == 0);
  // A model that pools the prompt skips nothing.
  noprompt.include_prompt = true;
  DOCTEST_CHECK(kalm::encode::prompt_pool_skip(noprompt, *noprompt.tokenizer, prompt) == 0);
}
