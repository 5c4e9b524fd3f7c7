// The encoder module itself: attention masks, padding safety, input checks,
// transformers' tensor names.

#include <doctest/doctest.h>

#include "kalm/error.h"
#include "kalm/model/checkpoint.h"
#include "kalm/model/device.h"
#include "kalm/model/transformer.h"
#include "model_test_util.h"

using kalm::model::AttentionMode;
using kalm::model::Encoder;
using kalm::model::LayerAttention;
using kalm::model::ModelConfig;
using kalm::model::Pooling;

namespace {

ModelConfig tiny_gemma(std::int64_t window) {
  return kalm::model::parse_config_json(
      R"({"model_type": "gemma3_text", "hidden_size": 16, "intermediate_size": 32,
          "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
          "head_dim": 8, "vocab_size": 40, "query_pre_attn_scalar": 8,
          "layer_types": ["sliding_attention", "full_attention"], "sliding_window": )" +
          std::to_string(window) + "}",
      "tiny");
}

ModelConfig tiny_qwen2() {
  return kalm::model::parse_config_json(
      R"({"model_type": "qwen2", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40})",
      "tiny");
}

// allowed[i][j] of batch row b, from the dense bool mask.
bool allowed(const torch::Tensor& mask, int64_t b, int64_t i, int64_t j) { return mask[b][0][i][j].item<bool>(); }

}  // namespace

DOCTEST_TEST_CASE("transformer: causal masks, with and without a sliding window") {
  Encoder enc(tiny_gemma(3), AttentionMode::Causal);
  const torch::Tensor pad = torch::tensor({{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}});
  const torch::Tensor full = enc->attention_allowed(pad, false);
  const torch::Tensor local = enc->attention_allowed(pad, true);
  DOCTEST_REQUIRE((full.sizes() == torch::IntArrayRef({2, 1, 6, 6})));
  DOCTEST_CHECK((full.scalar_type() == torch::kBool));
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 6; ++j) {
      DOCTEST_CHECK(allowed(full, 0, i, j) == (j <= i));
      DOCTEST_CHECK(allowed(local, 0, i, j) == (j <= i && i - j < 3));
      // Padded queries 4 and 5 see the real keys before them, and themselves.
      DOCTEST_CHECK(allowed(full, 1, i, j) == ((j <= i && j < 4) || i == j));
    }
  // What SDPA is given: is_causal alone for full layers, and for local ones
  // whose window covers the whole batch; the dense mask otherwise.
  const auto compact_full = enc->attention_mask_for(pad, false);
  DOCTEST_CHECK(compact_full.causal);
  DOCTEST_CHECK_FALSE(compact_full.allowed.defined());
  const auto compact_local = enc->attention_mask_for(pad, true);
  DOCTEST_CHECK_FALSE(compact_local.causal);
  DOCTEST_CHECK(torch::equal(compact_local.allowed, local));
  const auto short_local = enc->attention_mask_for(pad.narrow(1, 0, 3), true);  // window 3 covers L = 3
  DOCTEST_CHECK(short_local.causal);
}

DOCTEST_TEST_CASE("transformer: bidirectional masks follow transformers' Gemma3 window") {
  Encoder enc(tiny_gemma(6), AttentionMode::Bidirectional);  // |i - j| < 6 / 2 + 1 = 4
  const torch::Tensor pad = torch::tensor({{1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 0, 0, 0, 0}});
  const torch::Tensor full = enc->attention_allowed(pad, false);
  const torch::Tensor local = enc->attention_allowed(pad, true);
  for (int64_t i = 0; i < 9; ++i)
    for (int64_t j = 0; j < 9; ++j) {
      DOCTEST_CHECK(allowed(full, 0, i, j));
      DOCTEST_CHECK(allowed(full, 1, i, j) == (j < 5 || i == j));
      DOCTEST_CHECK(allowed(local, 0, i, j) == (std::abs(i - j) < 4));
      DOCTEST_CHECK(allowed(local, 1, i, j) == ((std::abs(i - j) < 4 && j < 5) || i == j));
    }
  // Full layers get a key-padding mask [B, 1, 1, L]; a row of padding only may see every key.
  const torch::Tensor with_empty = torch::tensor({{1, 1, 0}, {0, 0, 0}});
  const auto keys = enc->attention_mask_for(with_empty, false);
  DOCTEST_CHECK_FALSE(keys.causal);
  DOCTEST_CHECK(torch::equal(keys.allowed, torch::tensor({{true, true, false}, {true, true, true}}).view({2, 1, 1, 3})));
  // A batch without padding (known on the host): full layers need no mask at all
  // (flash attention on a GPU takes none); a window shorter than the batch still does.
  const torch::Tensor full_rows = torch::ones({2, 9}, torch::kLong);
  const auto none = enc->attention_mask_for(full_rows, false, /*unpadded=*/true);
  DOCTEST_CHECK_FALSE(none.allowed.defined());
  DOCTEST_CHECK_FALSE(none.causal);
  DOCTEST_CHECK(torch::equal(enc->attention_mask_for(full_rows, true, true).allowed,
                             enc->attention_allowed(full_rows, true)));
  namespace detail = kalm::model::detail;
  DOCTEST_CHECK(detail::host_mask_unpadded(full_rows));
  DOCTEST_CHECK(detail::host_mask_unpadded(torch::ones({2, 3}, torch::kInt)));
  DOCTEST_CHECK(detail::host_mask_unpadded(torch::ones({2, 3}, torch::kBool)));
  DOCTEST_CHECK_FALSE(detail::host_mask_unpadded(pad));
  DOCTEST_CHECK_FALSE(detail::host_mask_unpadded(torch::zeros({2, 3}, torch::kBool)));
  DOCTEST_CHECK(detail::host_mask_unpadded(full_rows.t()));         // non-contiguous views are scanned too
  DOCTEST_CHECK_FALSE(detail::host_mask_unpadded(pad.t()));
  DOCTEST_CHECK_FALSE(detail::host_mask_unpadded(torch::ones({2, 3}, torch::kFloat)));  // not a mask type kalm makes
}

DOCTEST_TEST_CASE("transformer: padding never produces NaN, even for rows that see nothing") {
  torch::NoGradGuard no_grad;
  for (AttentionMode mode : {AttentionMode::Causal, AttentionMode::Bidirectional}) {
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      Encoder enc(tiny_gemma(2), mode, torch::TensorOptions().dtype(dtype));
      enc->init_parameters(7);
      // Row 1: padded queries 8.. are more than the window away from any token;
      // row 2 is all padding (allowed in forward, refused by pooling).
      const torch::Tensor ids = torch::randint(0, 40, {3, 12}, torch::kLong);
      torch::Tensor mask = torch::ones({3, 12}, torch::kLong);
      mask[1].narrow(0, 3, 9).zero_();
      mask[2].zero_();
      const torch::Tensor h = enc->forward(ids, mask);
      DOCTEST_CHECK(torch::isfinite(h.to(torch::kFloat)).all().item<bool>());
      DOCTEST_CHECK_THROWS_AS(enc->embed(ids, mask, Pooling::Mean), kalm::UsageError);
      const torch::Tensor emb = enc->embed(ids.narrow(0, 0, 2), mask.narrow(0, 0, 2), Pooling::Mean);
      DOCTEST_CHECK(torch::isfinite(emb).all().item<bool>());
    }
  }
}

DOCTEST_TEST_CASE("transformer: bad inputs are usage errors, ids outside the vocabulary model errors") {
  torch::NoGradGuard no_grad;
  Encoder enc(tiny_qwen2(), AttentionMode::Causal);
  enc->init_parameters(1);
  const torch::Tensor ids = torch::randint(0, 40, {2, 5}, torch::kLong);
  const torch::Tensor mask = torch::ones({2, 5}, torch::kLong);
  DOCTEST_CHECK_THROWS_AS(enc->forward(ids, torch::ones({2, 4})), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(enc->forward(ids[0], mask[0]), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(enc->forward(ids.to(torch::kFloat), mask), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(enc->forward(torch::zeros({0, 5}, torch::kLong), torch::zeros({0, 5})), kalm::UsageError);
  torch::Tensor big = ids.clone();
  big[1][2] = 40;
  try {
    enc->forward(big, mask);
    DOCTEST_FAIL("expected ModelError");
  } catch (const kalm::ModelError& e) {
    const std::string msg = e.what();
    DOCTEST_CHECK(msg.find("token id 40 at sequence 1, position 2") != std::string::npos);
  }
  torch::Tensor negative = ids.clone();
  negative[0][0] = -1;
  DOCTEST_CHECK_THROWS_AS(enc->forward(negative, mask), kalm::ModelError);  // the tokenizer is not the model's
  const torch::Tensor left = torch::tensor({{0, 1, 1, 1, 1}, {1, 1, 1, 1, 1}});
  DOCTEST_CHECK_THROWS_AS(enc->forward(ids, left), kalm::UsageError);
  // int32 ids and a bool mask are fine.
  const torch::Tensor h = enc->forward(ids.to(torch::kInt), mask.to(torch::kBool));
  DOCTEST_CHECK((h.sizes() == torch::IntArrayRef({2, 5, 16})));
}

DOCTEST_TEST_CASE("transformer: init_parameters is reproducible and neutral in the norms") {
  Encoder a(tiny_gemma(4), AttentionMode::Causal), b(tiny_gemma(4), AttentionMode::Causal);
  a->init_parameters(42);
  b->init_parameters(42);
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  DOCTEST_REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) DOCTEST_CHECK(torch::equal(pa[i].value(), pb[i].value()));
  DOCTEST_CHECK(a->norm->weight.abs().sum().item<float>() == 0.0f);  // Gemma: (1 + w)
  Encoder q(tiny_qwen2(), AttentionMode::Causal);
  q->init_parameters(42);
  DOCTEST_CHECK(q->norm->weight.sum().item<float>() == 16.0f);
}

DOCTEST_TEST_CASE("transformer: transformers' tensor names and shapes, fused internally") {
  Encoder enc(tiny_qwen2(), AttentionMode::Causal);
  enc->init_parameters(3);
  const auto specs = enc->hf_tensor_specs();
  const auto tensors = enc->hf_tensors();
  DOCTEST_REQUIRE(specs.size() == tensors.size());
  DOCTEST_CHECK(specs.size() == 1 + 2 * 12 + 1);  // embed, 12 per Qwen2 layer, norm
  for (std::size_t i = 0; i < specs.size(); ++i) {
    DOCTEST_CHECK(specs[i].name == tensors[i].first);
    DOCTEST_CHECK((tensors[i].second.sizes() == torch::IntArrayRef(specs[i].shape)));
  }
  DOCTEST_CHECK(specs[1].name == "layers.0.self_attn.q_proj.weight");
  DOCTEST_CHECK(specs[1].shape == std::vector<std::int64_t>{16, 16});
  DOCTEST_CHECK(specs[3].shape == std::vector<std::int64_t>{8, 16});  // k_proj: 2 KV heads x 4

  // Loading what hf_tensors() gives reproduces the module exactly.
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  Encoder copy(tiny_qwen2(), AttentionMode::Causal);
  copy->load_hf_tensors(by_name, "memory");
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::randint(0, 40, {2, 6}, torch::kLong);
  const torch::Tensor mask = torch::ones({2, 6});
  DOCTEST_CHECK(torch::equal(copy->forward(ids, mask), enc->forward(ids, mask)));

  by_name.erase("layers.1.mlp.down_proj.weight");
  DOCTEST_CHECK_THROWS_AS(copy->load_hf_tensors(by_name, "memory"), kalm::ModelError);
}

DOCTEST_TEST_CASE("transformer: compute dtype names") {
  DOCTEST_CHECK((kalm::model::parse_compute_dtype("f32") == torch::kFloat));
  DOCTEST_CHECK((kalm::model::parse_compute_dtype("bf16") == torch::kBFloat16));
  DOCTEST_CHECK((kalm::model::parse_compute_dtype("tf32") == torch::kFloat));
  // TF32 is a GPU mode: asked for on CPU it is refused, not run as f32.
  DOCTEST_CHECK_THROWS_WITH_AS(kalm::model::enable_tf32(torch::Device(torch::kCPU)),
                               "--dtype tf32 is a GPU mode (TF32 tensor cores); on cpu use f32", kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::model::parse_compute_dtype("f16"), kalm::UsageError);
}

DOCTEST_TEST_CASE("transformer: CUDA matches the CPU when a GPU is present") {
  if (!torch::cuda::is_available()) return;  // exercised on GPU machines only
  torch::NoGradGuard no_grad;
  kalm::model::LoadOptions opts;
  opts.device = torch::Device(torch::kCUDA);
  for (const char* name : {"qwen2_bidir", "gemma3_causal"}) {
    const auto model = kalm::model::load_model(kalm_model_test::fixture(name), opts);
    DOCTEST_CHECK(model.encoder->device().is_cuda());
    const torch::Tensor ids = kalm_model_test::expected(name, "input_ids");
    const torch::Tensor mask = kalm_model_test::expected(name, "attention_mask");
    const torch::Tensor emb = model.encoder->embed(ids, mask, Pooling::Mean).cpu();
    DOCTEST_CHECK(kalm_model_test::max_abs_diff(emb, kalm_model_test::expected(name, "embeddings_mean")) <= 1e-4);
    // Rows without padding, the mask on the host: the unmasked attention call
    // (flash, in bf16) gives what the CPU's masked one does.
    const torch::Tensor dense_ids = ids.narrow(1, 0, 3);
    const torch::Tensor dense_mask = torch::ones_like(dense_ids);
    const auto cpu_model = kalm::model::load_model(kalm_model_test::fixture(name), {});
    const torch::Tensor on_cpu = cpu_model.encoder->embed(dense_ids, dense_mask, Pooling::Mean);
    const torch::Tensor on_gpu = model.encoder->embed(dense_ids, dense_mask, Pooling::Mean).cpu();
    DOCTEST_CHECK(kalm_model_test::max_abs_diff(on_gpu, on_cpu) <= 1e-4);
  }
}

DOCTEST_TEST_CASE("transformer: key/value heads repeated only where no fused CUDA kernel takes grouped heads, same result") {
  using kalm::model::AttentionMask;
  namespace detail = kalm::model::detail;
  const torch::Device cpu(torch::kCPU), cuda(torch::kCUDA, 0);  // a device name, no GPU needed
  const AttentionMask key_mask{torch::ones({2, 1, 1, 5}, torch::kBool), false};
  const AttentionMask causal_only{torch::Tensor(), true};
  const auto bf16 = torch::kBFloat16, f16 = torch::kHalf, f32 = torch::kFloat32;
  // The kernel-choice probe, counted: asked only for unmasked grouped calls in
  // flash's types on CUDA.
  int asked = 0;
  const auto fused = [&asked] { ++asked; return true; };
  const auto math_only = [&asked] { ++asked; return false; };
  DOCTEST_CHECK(detail::sdpa_repeats_kv(cuda, key_mask, 4, 2, bf16, fused));
  DOCTEST_CHECK(detail::sdpa_repeats_kv(cuda, key_mask, 4, 2, f32, fused));
  DOCTEST_CHECK_FALSE(detail::sdpa_repeats_kv(cuda, key_mask, 4, 4, bf16, math_only));  // no grouped heads
  DOCTEST_CHECK(detail::sdpa_repeats_kv(cuda, causal_only, 4, 2, f32, fused));          // flash takes no float32
  DOCTEST_CHECK_FALSE(detail::sdpa_repeats_kv(cpu, key_mask, 4, 2, f32, math_only));    // the CPU kernel takes both
  DOCTEST_CHECK_FALSE(detail::sdpa_repeats_kv(cpu, causal_only, 4, 2, bf16, math_only));
  DOCTEST_CHECK(asked == 0);
  DOCTEST_CHECK_FALSE(detail::sdpa_repeats_kv(cuda, causal_only, 4, 2, bf16, fused));  // flash: grouped heads, no mask
  DOCTEST_CHECK_FALSE(detail::sdpa_repeats_kv(cuda, causal_only, 4, 2, f16, fused));
  DOCTEST_CHECK(asked == 2);
  // A GPU where flash cannot run (T4, V100): repeat, so that the memory-efficient kernel takes the call.
  DOCTEST_CHECK(detail::sdpa_repeats_kv(cuda, causal_only, 4, 2, f16, math_only));
  DOCTEST_CHECK(detail::sdpa_repeats_kv(cuda, AttentionMask{torch::Tensor(), false}, 4, 2, bf16, math_only));
  DOCTEST_CHECK(asked == 4);

  // The probe (one row of empty tensors) answers as LibTorch's choice for the
  // whole call does, here on the CPU: the batch does not enter the choice.
  for (const auto dtype : {f32, bf16}) {
    for (const bool causal : {false, true}) {
      DOCTEST_CAPTURE(causal);
      const auto opt = torch::TensorOptions().dtype(dtype);
      const auto bq = torch::randn({6, 14, 33, 64}, opt), bk = torch::randn({6, 2, 33, 64}, opt);
      const auto full = at::_fused_sdp_choice(bq, bk, bk, std::nullopt, 0.0, causal, 0.125, true);
      DOCTEST_CHECK(detail::sdpa_grouped_call_fused(bq, 2, causal, 0.125, dtype) ==
                    (full != static_cast<int64_t>(at::SDPBackend::math)));
    }
  }

  // B 2, L 5, H 4 query heads over K 2 key/value heads, D 8; row 1 padded after 3 tokens.
  torch::manual_seed(11);
  const auto q = torch::randn({2, 5, 4, 8}), k = torch::randn({2, 5, 2, 8}), v = torch::randn({2, 5, 2, 8});
  AttentionMask mask{torch::tensor({true, true, true, true, true, true, true, true, false, false}).view({2, 1, 1, 5}),
                     false};
  const auto shared = detail::sdpa_inputs(q, k, v, mask, /*repeat_kv=*/false);
  const auto repeated = detail::sdpa_inputs(q, k, v, mask, /*repeat_kv=*/true);
  DOCTEST_CHECK(shared.enable_gqa);
  DOCTEST_CHECK_FALSE(repeated.enable_gqa);
  DOCTEST_CHECK(shared.k.sizes() == torch::IntArrayRef({2, 2, 5, 8}));
  DOCTEST_CHECK(repeated.k.sizes() == torch::IntArrayRef({2, 4, 5, 8}));
  // Query heads 0-1 read key/value head 0, heads 2-3 head 1.
  DOCTEST_CHECK(torch::equal(repeated.v.select(1, 1), shared.v.select(1, 0)));
  DOCTEST_CHECK(torch::equal(repeated.v.select(1, 2), shared.v.select(1, 1)));
  auto attend = [](const detail::SdpaInputs& in) {
    return at::scaled_dot_product_attention(in.q, in.k, in.v, in.mask, 0.0, in.causal, 0.35, in.enable_gqa);
  };
  DOCTEST_CHECK(kalm_model_test::max_abs_diff(attend(shared), attend(repeated)) <= 1e-6);

  // On a GPU: the kernel LibTorch picks for the model's masked call (Qwen2-0.5B's
  // heads, bf16) is a fused one, not the math fallback (sdp::SDPBackend::math = 0).
  if (torch::cuda::is_available()) {
    const auto opt = torch::TensorOptions().dtype(torch::kBFloat16).device(cuda);
    const auto gq = torch::randn({4, 64, 14, 64}, opt), gk = torch::randn({4, 64, 2, 64}, opt),
               gv = torch::randn({4, 64, 2, 64}, opt);
    const AttentionMask gmask{torch::ones({4, 1, 1, 64}, torch::TensorOptions().dtype(torch::kBool).device(cuda)),
                              false};
    const auto in = detail::sdpa_inputs(gq, gk, gv, gmask, detail::sdpa_repeats_kv(cuda, gmask, 14, 2, bf16, [] { return true; }));
    const auto choice = at::_fused_sdp_choice(in.q, in.k, in.v, in.mask, 0.0, in.causal, 0.125, in.enable_gqa);
    DOCTEST_MESSAGE("CUDA SDPA backend for a masked grouped-query call: " << choice);
    DOCTEST_CHECK(choice != 0);
    // Causal, no mask, float32 (kalm's default dtype): not flash's, still fused.
    const auto f = [](const torch::Tensor& t) { return t.to(torch::kFloat32); };
    const AttentionMask causal{torch::Tensor(), true};
    const auto in32 = detail::sdpa_inputs(f(gq), f(gk), f(gv), causal, detail::sdpa_repeats_kv(cuda, causal, 14, 2, f32, [] { return true; }));
    const auto choice32 =
        at::_fused_sdp_choice(in32.q, in32.k, in32.v, in32.mask, 0.0, in32.causal, 0.125, in32.enable_gqa);
    DOCTEST_MESSAGE("CUDA SDPA backend for a causal float32 grouped-query call: " << choice32);
    DOCTEST_CHECK(choice32 != 0);
    // The unmasked bf16 call: the probe answers as the choice for the whole call.
    const auto tq = gq.transpose(1, 2), tk = gk.transpose(1, 2);
    const auto whole = at::_fused_sdp_choice(tq, tk, tk, std::nullopt, 0.0, true, 0.125, true);
    DOCTEST_MESSAGE("CUDA SDPA backend for a causal unmasked bf16 grouped-query call: " << whole);
    DOCTEST_CHECK(detail::sdpa_grouped_call_fused(tq, 2, true, 0.125, bf16) == (whole != 0));
  }
}
