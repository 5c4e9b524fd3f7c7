// Parity with Hugging Face transformers (eager, float32): the fixtures hold tiny
// random checkpoints and transformers' outputs for a right-padded batch of mixed
// lengths (see tests/fixtures/models/gen_fixtures.py for versions and setup).

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kalm/model/checkpoint.h"
#include "model_test_util.h"

using kalm::model::AttentionMode;
using kalm::model::LoadOptions;
using kalm::model::Pooling;
using kalm_model_test::expected;
using kalm_model_test::fixture;
using kalm_model_test::max_abs_diff;

namespace {

const char* const kFixtures[] = {"qwen2_causal", "qwen2_bidir", "gemma3_causal", "gemma3_bidir"};
constexpr double kEmbeddingTolerance = 1e-5;  // the spec, on L2-normalised embeddings
constexpr double kHiddenTolerance = 2e-5;     // hidden states reach |h| ~ 5

struct PoolCase {
  Pooling pooling;
  const char* tensor;
};
const PoolCase kPools[] = {{Pooling::Mean, "embeddings_mean"},
                           {Pooling::LastToken, "embeddings_last"},
                           {Pooling::Cls, "embeddings_cls"}};

}  // namespace

DOCTEST_TEST_CASE("model parity: f32 last hidden states and embeddings match transformers") {
  torch::NoGradGuard no_grad;
  for (const char* name : kFixtures) {
    const std::string fixture_name = name;
    DOCTEST_CAPTURE(fixture_name);
    const auto model = kalm::model::load_model(fixture(name));
    const torch::Tensor ids = expected(name, "input_ids");
    const torch::Tensor mask = expected(name, "attention_mask");
    // The batch must reach past the local layers' window to test it.
    if (auto w = model.config.attention_window(model.encoder->attention()))
      DOCTEST_REQUIRE(ids.size(1) > 2 * *w);

    const torch::Tensor hidden = model.encoder->forward(ids, mask);
    DOCTEST_REQUIRE((hidden.scalar_type() == torch::kFloat));
    DOCTEST_REQUIRE((hidden.sizes() == expected(name, "last_hidden_state").sizes()));
    const torch::Tensor valid = mask.unsqueeze(-1).to(torch::kFloat);
    const double hidden_diff = max_abs_diff(hidden * valid, expected(name, "last_hidden_state"));
    DOCTEST_CHECK(hidden_diff <= kHiddenTolerance);
    DOCTEST_CHECK(torch::isfinite(hidden).all().item<bool>());

    for (const auto& pc : kPools) {
      const std::string pooled = pc.tensor;
      DOCTEST_CAPTURE(pooled);
      const torch::Tensor emb = model.encoder->embed(ids, mask, pc.pooling);
      const double diff = max_abs_diff(emb, expected(name, pc.tensor));
      DOCTEST_CHECK(diff <= kEmbeddingTolerance);
      const torch::Tensor emb32 = model.encoder->embed(ids, mask, pc.pooling, true, 32);
      DOCTEST_CHECK(emb32.size(1) == 32);
      DOCTEST_CHECK(max_abs_diff(emb32, expected(name, std::string(pc.tensor) + "_dim32")) <=
                    kEmbeddingTolerance);
    }
  }
}

DOCTEST_TEST_CASE("model parity: each fixture loads with the attention and pooling it was made with") {
  const auto qc = kalm::model::load_model(fixture("qwen2_causal"));
  DOCTEST_CHECK(qc.encoder->attention() == AttentionMode::Causal);
  DOCTEST_CHECK(qc.weights_prefix == "model.");
  DOCTEST_CHECK(qc.sentence_transformers.pooling == Pooling::Mean);
  const auto qb = kalm::model::load_model(fixture("qwen2_bidir"));
  DOCTEST_CHECK(qb.encoder->attention() == AttentionMode::Bidirectional);  // "is_causal": false
  DOCTEST_CHECK(qb.weights_prefix == "");
  const auto gc = kalm::model::load_model(fixture("gemma3_causal"));
  DOCTEST_CHECK(gc.config.model_type == "gemma3");
  DOCTEST_CHECK(gc.weights_prefix == "language_model.model.");
  DOCTEST_CHECK(gc.encoder->attention() == AttentionMode::Causal);
  DOCTEST_CHECK(gc.sentence_transformers.pooling == Pooling::LastToken);
  const auto gb = kalm::model::load_model(fixture("gemma3_bidir"));
  DOCTEST_CHECK(gb.encoder->attention() == AttentionMode::Bidirectional);
  DOCTEST_CHECK(gb.config.attention_window(AttentionMode::Bidirectional) == 5);  // 8 / 2 + 1
}

DOCTEST_TEST_CASE("model parity: a row's output does not depend on its batch or on pad ids") {
  torch::NoGradGuard no_grad;
  for (const char* name : kFixtures) {
    const std::string fixture_name = name;
    DOCTEST_CAPTURE(fixture_name);
    const auto model = kalm::model::load_model(fixture(name));
    const torch::Tensor ids = expected(name, "input_ids");
    const torch::Tensor mask = expected(name, "attention_mask");
    const torch::Tensor batched = model.encoder->embed(ids, mask, Pooling::Mean);

    // Garbage (even negative) ids at padded positions change nothing.
    const torch::Tensor noisy =
        ids.masked_fill(mask.eq(0), 0) + mask.eq(0).to(torch::kLong) * torch::randint(-5, 500, ids.sizes(), torch::kLong);
    DOCTEST_CHECK(max_abs_diff(model.encoder->embed(noisy, mask, Pooling::Mean), batched) == 0.0);

    for (int64_t b = 0; b < ids.size(0); ++b) {
      const int64_t n = mask[b].sum().item<int64_t>();
      const torch::Tensor one_ids = ids[b].narrow(0, 0, n).unsqueeze(0);
      const torch::Tensor one = model.encoder->embed(one_ids, torch::ones_like(one_ids), Pooling::Mean);
      DOCTEST_CHECK(max_abs_diff(one[0], batched[b]) <= kEmbeddingTolerance);
    }
  }
}

DOCTEST_TEST_CASE("model parity: bf16 compute stays within cosine 0.999 of f32") {
  torch::NoGradGuard no_grad;
  LoadOptions bf16;
  bf16.dtype = torch::kBFloat16;
  for (const char* name : kFixtures) {
    const std::string fixture_name = name;
    DOCTEST_CAPTURE(fixture_name);
    const auto model = kalm::model::load_model(fixture(name), bf16);
    DOCTEST_CHECK((model.encoder->dtype() == torch::kBFloat16));
    const torch::Tensor ids = expected(name, "input_ids");
    const torch::Tensor mask = expected(name, "attention_mask");
    const torch::Tensor hidden = model.encoder->forward(ids, mask);
    DOCTEST_CHECK((hidden.scalar_type() == torch::kBFloat16));
    for (const auto& pc : kPools) {
      const std::string pooled = pc.tensor;
      DOCTEST_CAPTURE(pooled);
      const torch::Tensor emb = model.encoder->embed(ids, mask, pc.pooling);
      DOCTEST_CHECK((emb.scalar_type() == torch::kFloat));
      const torch::Tensor cos = (emb * expected(name, pc.tensor)).sum(1);
      DOCTEST_CHECK(cos.min().item<double>() >= 0.999);
    }
  }
}

DOCTEST_TEST_CASE("model parity: the attention override changes the result and matches the other fixture's mode") {
  torch::NoGradGuard no_grad;
  LoadOptions opts;
  opts.attention = AttentionMode::Bidirectional;
  const auto forced = kalm::model::load_model(fixture("qwen2_causal"), opts);
  DOCTEST_CHECK(forced.encoder->attention() == AttentionMode::Bidirectional);
  const torch::Tensor ids = expected("qwen2_causal", "input_ids");
  const torch::Tensor mask = expected("qwen2_causal", "attention_mask");
  const torch::Tensor emb = forced.encoder->embed(ids, mask, Pooling::Mean);
  // Bidirectional attention must change every multi-token row; the one-token row
  // (index 3) sees only itself either way.
  const torch::Tensor causal = expected("qwen2_causal", "embeddings_mean");
  for (int64_t b = 0; b < 3; ++b) DOCTEST_CHECK(max_abs_diff(emb[b], causal[b]) > 1e-3);
  DOCTEST_CHECK(max_abs_diff(emb[3], causal[3]) <= kEmbeddingTolerance);
}
