// The token limit of the model-running tools: --max-length, else the model's
// sentence_bert_config.json max_seq_length, else 512.

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
  // No sentence_bert_config.json: unset, so the default applies.
  auto plain = kalm::encode::load_embedder(fixtures("models/qwen2_causal"), settings, /*require_tokenizer=*/false);
  DOCTEST_CHECK(!plain.max_seq_length);
  DOCTEST_CHECK(resolve_max_length(kUnset, plain.max_seq_length) == 512);
}
