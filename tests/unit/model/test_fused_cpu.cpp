// The fused bf16 CPU kernels (lib/src/model/fused_cpu.cpp) against the
// op-by-op LibTorch path they replace: the same modules run with
// kalm::model::set_fused_cpu_kernels on and off.

#include <ATen/record_function.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <cstring>
#include <map>
#include <string>

#include "kalm/model/config.h"
#include "kalm/model/transformer.h"

using kalm::model::AttentionMode;
using kalm::model::Encoder;
using kalm::model::ModelConfig;

namespace {

#if defined(KALM_FUSED_ROW_TARGET)
// This binary's kernels are built for one instruction set only
// (tests/CMakeLists.txt): a CPU without it skips the test (ctest's
// SKIP_RETURN_CODE) instead of dying on an illegal instruction.
const bool kTargetChecked = [] {
  if (std::string(KALM_FUSED_ROW_TARGET) == "arch=x86-64-v3" && !__builtin_cpu_supports("x86-64-v3")) {
    std::fprintf(stderr, "skipped: this CPU lacks x86-64-v3 (AVX2, FMA)\n");
    std::_Exit(77);
  }
  return true;
}();
#endif

// Restores the process-wide switch at scope exit.
class FusedKernels {
 public:
  explicit FusedKernels(bool on) : before_(kalm::model::fused_cpu_kernels()) { kalm::model::set_fused_cpu_kernels(on); }
  ~FusedKernels() { kalm::model::set_fused_cpu_kernels(before_); }
  FusedKernels(const FusedKernels&) = delete;
  FusedKernels& operator=(const FusedKernels&) = delete;

 private:
  bool before_;
};

// Counts the fused kernels' profiler scopes (kalm::fused_*) run on this
// thread while it lives: the proof that the fused path, not the op-by-op one, ran.
class FusedCallCounter {
 public:
  FusedCallCounter() {
    counts().clear();
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(
            [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
              const std::string name = fn.name();
              if (name.rfind("kalm::fused_", 0) == 0) ++counts()[name.substr(12)];
              return nullptr;
            })
            .scopes({at::RecordScope::USER_SCOPE}));
  }
  ~FusedCallCounter() { at::removeCallback(handle_); }
  FusedCallCounter(const FusedCallCounter&) = delete;
  FusedCallCounter& operator=(const FusedCallCounter&) = delete;
  int operator[](const std::string& kernel) const { return counts()[kernel]; }
  int total() const {
    int n = 0;
    for (const auto& kv : counts()) n += kv.second;
    return n;
  }

 private:
  static std::map<std::string, int>& counts() {
    thread_local std::map<std::string, int> c;
    return c;
  }
  at::CallbackHandle handle_;
};

template <class F>
torch::Tensor run_with(bool fused, F&& f) {
  FusedKernels switch_(fused);
  return f();
}

// Distance in bf16 units in the last place between two bf16 tensors of the
// same shape (values of one sign: order of their bit patterns).
struct UlpStats {
  std::int64_t max = 0;
  std::int64_t differing = 0;
  std::int64_t total = 0;
};

UlpStats ulp_distance(const torch::Tensor& a, const torch::Tensor& b) {
  DOCTEST_REQUIRE((a.scalar_type() == torch::kBFloat16));
  DOCTEST_REQUIRE((b.scalar_type() == torch::kBFloat16));
  DOCTEST_REQUIRE((a.sizes() == b.sizes()));
  const torch::Tensor ac = a.contiguous(), bc = b.contiguous();
  const auto* pa = reinterpret_cast<const std::uint16_t*>(ac.data_ptr<at::BFloat16>());
  const auto* pb = reinterpret_cast<const std::uint16_t*>(bc.data_ptr<at::BFloat16>());
  // Sign-magnitude to a monotone integer line.
  auto line = [](std::uint16_t u) -> std::int64_t { return (u & 0x8000u) ? -std::int64_t(u & 0x7FFFu) : std::int64_t(u); };
  UlpStats s;
  s.total = ac.numel();
  for (std::int64_t i = 0; i < s.total; ++i) {
    const std::int64_t d = std::abs(line(pa[i]) - line(pb[i]));
    s.max = std::max(s.max, d);
    if (d != 0) ++s.differing;
  }
  return s;
}

ModelConfig qwen2_config(std::int64_t hidden, std::int64_t intermediate, std::int64_t layers) {
  return kalm::model::parse_config_json(
      R"({"model_type": "qwen2", "hidden_size": )" + std::to_string(hidden) + R"(, "intermediate_size": )" +
          std::to_string(intermediate) + R"(, "num_hidden_layers": )" + std::to_string(layers) +
          R"(, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300})",
      "fused-test");
}

ModelConfig gemma3_config() {
  return kalm::model::parse_config_json(
      R"({"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 16, "vocab_size": 300, "query_pre_attn_scalar": 16,
          "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 4})",
      "fused-test");
}

const auto kBf16 = torch::TensorOptions().dtype(torch::kBFloat16);

}  // namespace

DOCTEST_TEST_CASE("fused bf16 kernels: the instruction set reported is the one built for or picked") {
  const std::string isa = kalm::model::fused_cpu_kernel_isa();
#if defined(KALM_FUSED_ROW_TARGET)
  DOCTEST_CHECK(kTargetChecked);
  DOCTEST_CHECK(isa == std::string("only ") + KALM_FUSED_ROW_TARGET);
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  // The widest clone the CPU can run, as GCC's target_clones resolver picks it.
  const std::string expected = __builtin_cpu_supports("x86-64-v4")   ? "x86-64-v4"
                               : __builtin_cpu_supports("x86-64-v3") ? "x86-64-v3"
                                                                     : "default";
  DOCTEST_CHECK(isa == expected);
#else
  DOCTEST_CHECK(isa == "default");
#endif
}

DOCTEST_TEST_CASE("fused bf16 kernels: RMSNorm and the residual add within one bf16 unit of the op-by-op path") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  for (bool gemma : {false, true}) {
    DOCTEST_CAPTURE(gemma);
    kalm::model::RMSNorm norm(896, 1e-6, gemma, kBf16);
    norm->weight.copy_(torch::randn({896}) * 0.5 + (gemma ? 0.0 : 1.0));
    // Rows of very different scales, as hidden states have.
    const torch::Tensor x = (torch::randn({257, 896}) * torch::logspace(-3, 3, 257).view({257, 1})).to(torch::kBFloat16);
    const torch::Tensor y = torch::randn({257, 896}).to(torch::kBFloat16);
    torch::Tensor fused, plain;
    {
      FusedCallCounter calls;
      fused = run_with(true, [&] { return norm->forward(x); });
      DOCTEST_CHECK(calls["rms_norm"] == 1);
      plain = run_with(false, [&] { return norm->forward(x); });
      DOCTEST_CHECK(calls.total() == 1);
    }
    DOCTEST_CHECK((fused.scalar_type() == torch::kBFloat16));
    const UlpStats s = ulp_distance(fused, plain);
    DOCTEST_CHECK(s.max <= 1);
    DOCTEST_CHECK(s.differing * 100 <= s.total);  // at most 1% of the values move by that unit

    std::pair<torch::Tensor, torch::Tensor> fused_pair, plain_pair;
    {
      FusedCallCounter calls;
      FusedKernels on(true);
      fused_pair = norm->add_and_forward(x, y);
      DOCTEST_CHECK(calls["add_rms_norm"] == 1);
    }
    {
      FusedKernels off(false);
      plain_pair = norm->add_and_forward(x, y);
    }
    DOCTEST_CHECK(torch::equal(fused_pair.first, plain_pair.first));  // the bf16 sum is exact
    DOCTEST_CHECK(ulp_distance(fused_pair.second, plain_pair.second).max <= 1);
  }
}

DOCTEST_TEST_CASE("fused bf16 kernels: the SiLU gate matches LibTorch's silu(gate) * up") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(4);
  // hidden == intermediate and an identity down projection: the MLP's output
  // is the gated activation itself (a bf16 GEMM with one 1.0 per row is exact).
  const ModelConfig config = qwen2_config(64, 64, 1);
  kalm::model::Mlp mlp(config, kBf16);
  mlp->down_proj->weight.copy_(torch::eye(64));
  mlp->gate_up_proj->weight.copy_(torch::eye(64).repeat({2, 1}));
  // Gate and up are both x; x covers the range exp() meets: tiny, moderate,
  // the overflow edge (|x| ~ 88) and beyond.
  torch::Tensor x = torch::randn({40, 64}) * 4;
  x[0] = torch::linspace(-120, 120, 64);
  x[1] = torch::linspace(-90, -85, 64);
  x[2] = torch::linspace(-1e-3, 1e-3, 64);
  x = x.to(torch::kBFloat16);
  FusedCallCounter calls;
  const torch::Tensor fused = run_with(true, [&] { return mlp->forward(x); });
  DOCTEST_CHECK(calls["silu_gate"] == 1);
  const torch::Tensor plain = run_with(false, [&] { return mlp->forward(x); });
  DOCTEST_CHECK(calls.total() == 1);
  const torch::Tensor reference = (torch::silu(x) * x);  // bf16 op by op
  DOCTEST_CHECK(torch::equal(plain, reference));          // the identity projections are exact
  const UlpStats s = ulp_distance(fused, plain);
  DOCTEST_CHECK(s.max <= 1);
  DOCTEST_CHECK(s.differing * 100 <= s.total);
  // The far tails: silu(-120) is -0 (or -1e-50-ish: 0 in bf16), silu(120) is 120 * 120.
  DOCTEST_CHECK(fused[0][0].item<float>() == 0.0f);
  DOCTEST_CHECK(fused[0][63].item<float>() == plain[0][63].item<float>());
  // NaN stays NaN (an overflow upstream is reported, not hidden).
  torch::Tensor with_nan = x.clone();
  with_nan[5][7] = std::numeric_limits<float>::quiet_NaN();
  const torch::Tensor nan_out = run_with(true, [&] { return mlp->forward(with_nan); });
  DOCTEST_CHECK(std::isnan(nan_out[5][7].item<float>()));
  DOCTEST_CHECK(torch::equal(nan_out[6], fused[6]));
}

DOCTEST_TEST_CASE("fused bf16 kernels: the SiLU gate over every finite bf16 gate value") {
  torch::NoGradGuard no_grad;
  // Hidden 65, intermediate 64: gate = the first 64 inputs, up = the 65th
  // (1.0), the down projection hands the gate's 64 columns back; bf16 GEMMs
  // of one exact 1.0 per row are exact. So the output is bf16(silu(gate)),
  // over all 65,536 bit patterns but NaN, +-inf and the subnormals (which
  // AVX512-BF16 and AMX dot products read as zero), including exp()'s clamp
  // edges.
  const ModelConfig config = qwen2_config(65, 64, 1);
  kalm::model::Mlp mlp(config, kBf16);
  torch::Tensor gate_up = torch::zeros({128, 65});
  gate_up.narrow(0, 0, 64).narrow(1, 0, 64).copy_(torch::eye(64));
  gate_up.narrow(0, 64, 64).select(1, 64).fill_(1.0);
  mlp->gate_up_proj->weight.copy_(gate_up);
  torch::Tensor down = torch::zeros({65, 64});
  down.narrow(0, 0, 64).copy_(torch::eye(64));
  mlp->down_proj->weight.copy_(down);

  torch::Tensor bits = torch::arange(0, 65536, torch::kInt32);
  const torch::Tensor exponent = bits.bitwise_and(0x7F80);
  const torch::Tensor zero = bits.bitwise_and(0x7FFF) == 0;
  bits = bits.masked_select((exponent != 0x7F80).logical_and((exponent != 0).logical_or(zero)));
  const std::int64_t rows = bits.numel() / 64;
  bits = bits.narrow(0, 0, rows * 64);
  const torch::Tensor values =
      bits.to(torch::kInt16).view(torch::kBFloat16).view({rows, 64});  // the patterns as bf16 values
  torch::Tensor x = torch::ones({rows, 65}, kBf16);
  x.narrow(1, 0, 64).copy_(values);

  FusedCallCounter calls;
  const torch::Tensor fused = run_with(true, [&] { return mlp->forward(x); }).narrow(1, 0, 64);
  DOCTEST_CHECK(calls["silu_gate"] == 1);
  // LibTorch's bf16 SiLU, its subnormal results zero: the down projection's
  // bf16 GEMM reads them as zero too.
  const torch::Tensor exact = torch::silu(values);
  const torch::Tensor reference =
      torch::where(exact.abs() < std::numeric_limits<float>::min(), torch::zeros_like(exact), exact);
  DOCTEST_CHECK(fused.isfinite().all().item<bool>());
  const UlpStats s = ulp_distance(fused, reference);
  DOCTEST_CAPTURE(s.differing);
  DOCTEST_CHECK(s.max <= 1);
  DOCTEST_CHECK(s.differing * 100 <= s.total);
  // The far tails exactly: 0 (of either sign) below about -88, the input itself above about 17.
  const torch::Tensor big = values.abs() > 100;
  DOCTEST_CHECK(torch::equal(fused.masked_select(big), reference.masked_select(big)));
}

DOCTEST_TEST_CASE("fused bf16 kernels: RoPE gives attention bit-identical to the op-by-op path") {
  torch::NoGradGuard no_grad;
  for (bool gemma : {false, true}) {
    DOCTEST_CAPTURE(gemma);
    const ModelConfig config = gemma ? gemma3_config() : qwen2_config(64, 96, 1);
    Encoder enc(config, AttentionMode::Causal, kBf16);
    enc->init_parameters(11);
    const auto& attn = enc->layers[0]->as<kalm::model::DecoderLayerImpl>()->self_attn;
    torch::manual_seed(5);
    const std::int64_t L = 9, D = config.head_dim;
    const torch::Tensor x = torch::randn({3, L, config.hidden_size}).to(torch::kBFloat16);
    // RoPE tables as the encoder builds them, positions far apart so that sin/cos vary.
    const torch::Tensor pos = torch::arange(L, torch::kFloat).view({L, 1}) * 37;
    const torch::Tensor freq = torch::pow(10000.0, -torch::arange(0, D, 2, torch::kFloat) / D).view({1, D / 2});
    const torch::Tensor angles = torch::cat({pos * freq, pos * freq}, 1);
    const torch::Tensor cos = angles.cos().to(torch::kBFloat16), sin = angles.sin().to(torch::kBFloat16);
    kalm::model::AttentionMask mask{torch::Tensor(), true};
    FusedCallCounter calls;
    const torch::Tensor fused = run_with(true, [&] { return attn->forward(x, cos, sin, mask); });
    // q and k; Gemma3's q/k norms read strided views of the projection and
    // stay op by op.
    DOCTEST_CHECK(calls["rotary"] == 2);
    DOCTEST_CHECK(calls.total() == 2);
    const torch::Tensor plain = run_with(false, [&] { return attn->forward(x, cos, sin, mask); });
    DOCTEST_CHECK(calls.total() == 2);
    DOCTEST_CHECK(torch::equal(fused, plain));
  }
}

DOCTEST_TEST_CASE("fused bf16 kernels: whole encoders agree with the op-by-op path; f32 and training are untouched") {
  torch::manual_seed(6);
  for (bool gemma : {false, true}) {
    DOCTEST_CAPTURE(gemma);
    const ModelConfig config = gemma ? gemma3_config() : qwen2_config(128, 256, 3);
    for (auto mode : {AttentionMode::Causal, AttentionMode::Bidirectional}) {
      Encoder enc(config, mode, kBf16);
      enc->init_parameters(12);
      const torch::Tensor ids = torch::randint(0, 300, {4, 15}, torch::kLong);
      torch::Tensor mask = torch::ones({4, 15}, torch::kLong);
      mask[1].narrow(0, 6, 9).zero_();
      mask[3].narrow(0, 1, 14).zero_();
      torch::Tensor fused, plain;
      {
        torch::NoGradGuard no_grad;
        FusedCallCounter calls;
        fused = run_with(true, [&] { return enc->embed(ids, mask, kalm::model::Pooling::Mean); });
        const int layers = static_cast<int>(config.num_hidden_layers);
        DOCTEST_CHECK(calls["rotary"] == 2 * layers);
        if (gemma) {
          // Four norms per layer and the final one; gelu is not fused.
          DOCTEST_CHECK(calls["rms_norm"] == 4 * layers + 1);
          DOCTEST_CHECK(calls.total() == 6 * layers + 1);
        } else {
          // The first input norm alone; every residual add fused into the norm after it.
          DOCTEST_CHECK(calls["rms_norm"] == 1);
          DOCTEST_CHECK(calls["add_rms_norm"] == 2 * layers);
          DOCTEST_CHECK(calls["silu_gate"] == layers);
          DOCTEST_CHECK(calls.total() == 1 + 5 * layers);
        }
        const int fused_calls = calls.total();
        plain = run_with(false, [&] { return enc->embed(ids, mask, kalm::model::Pooling::Mean); });
        DOCTEST_CHECK(calls.total() == fused_calls);
      }
      const double min_cos = (fused * plain).sum(1).min().item<double>();
      DOCTEST_CHECK(min_cos >= 0.9999);
      DOCTEST_CHECK((fused - plain).abs().max().item<double>() <= 0.02);

      // With autograd recording (training), the differentiable op-by-op path
      // runs whatever the switch says: gradients reach every parameter.
      FusedKernels on(true);
      FusedCallCounter calls;
      const torch::Tensor h = enc->forward(ids, mask);
      DOCTEST_CHECK(calls.total() == 0);
      DOCTEST_CHECK(h.requires_grad());
      h.to(torch::kFloat).pow(2).sum().backward();
      for (const auto& p : enc->parameters()) DOCTEST_CHECK(p.grad().defined());
      enc->zero_grad();
    }
  }
  // f32 models never take the bf16 kernels: bit-identical with the switch either way.
  torch::NoGradGuard no_grad;
  Encoder enc(qwen2_config(64, 96, 2), AttentionMode::Causal, torch::TensorOptions().dtype(torch::kFloat));
  enc->init_parameters(13);
  const torch::Tensor ids = torch::randint(0, 300, {2, 7}, torch::kLong);
  const torch::Tensor mask = torch::ones({2, 7}, torch::kLong);
  FusedCallCounter calls;
  const torch::Tensor a = run_with(true, [&] { return enc->forward(ids, mask); });
  DOCTEST_CHECK(calls.total() == 0);
  const torch::Tensor b = run_with(false, [&] { return enc->forward(ids, mask); });
  DOCTEST_CHECK(torch::equal(a, b));
}

DOCTEST_TEST_CASE("fused f32 RMSNorm backward: the op-by-op forward values, autograd's gradient to float32 rounding") {
  torch::manual_seed(7);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  // Widths that are and are not a multiple of any vector width; no rows at all.
  for (const std::vector<std::int64_t>& shape :
       {std::vector<std::int64_t>{3, 5}, {2, 7, 33}, {64, 256}, {0, 16}, {1, 1}}) {
    for (bool one_plus_weight : {false, true}) {
      DOCTEST_CAPTURE(shape.size());
      DOCTEST_CAPTURE(shape.back());
      DOCTEST_CAPTURE(one_plus_weight);
      kalm::model::RMSNorm norm(shape.back(), 1e-6, one_plus_weight, f32);
      {
        torch::NoGradGuard no_grad;
        norm->weight.copy_(torch::randn({shape.back()}, f32));
      }
      const torch::Tensor x0 = torch::randn(shape, f32) * 3.0;
      const torch::Tensor grad = torch::randn(shape, f32);
      struct Result {
        torch::Tensor y, dx, dw;
        int fused_backwards;
      };
      auto run = [&](bool fused) {
        FusedKernels switch_(fused);
        FusedCallCounter calls;
        norm->zero_grad();
        const torch::Tensor x = x0.clone().requires_grad_(true);
        const torch::Tensor y = norm->forward(x);
        y.backward(grad);
        return Result{y.detach(), x.grad(), norm->weight.grad().clone(), calls["rms_normalize_backward"]};
      };
      const Result fused = run(true), plain = run(false);
      DOCTEST_CHECK(fused.fused_backwards == 1);
      DOCTEST_CHECK(plain.fused_backwards == 0);
      DOCTEST_CHECK(torch::equal(fused.y, plain.y));
      DOCTEST_CHECK(torch::allclose(fused.dx, plain.dx, /*rtol=*/1e-5, /*atol=*/1e-5));
      DOCTEST_CHECK(torch::allclose(fused.dw, plain.dw, /*rtol=*/1e-5, /*atol=*/1e-5));
    }
  }
  // The gradient through the normalisation of a constant row is zero (scaling
  // x does not change x * rsqrt(mean(x^2))): r * g - r^3 * dot / cols * x
  // cancels to rounding.
  kalm::model::RMSNorm norm(8, 0.0, false, f32);
  {
    torch::NoGradGuard no_grad;
    norm->weight.fill_(1.0);
  }
  const torch::Tensor flat = torch::full({2, 8}, 2.5, f32).requires_grad_(true);
  norm->forward(flat).sum().backward();
  DOCTEST_CHECK(flat.grad().abs().max().item<double>() < 1e-6);
  // An input that does not require grad (only the weight's gradient is
  // wanted), or no recording: the op-by-op path.
  FusedCallCounter calls;
  norm->zero_grad();
  const torch::Tensor free_x = torch::randn({2, 8}, f32);
  norm->forward(free_x).sum().backward();
  DOCTEST_CHECK(norm->weight.grad().defined());
  {
    torch::NoGradGuard no_grad;
    DOCTEST_CHECK(!norm->forward(free_x.clone().requires_grad_(true)).requires_grad());
  }
  DOCTEST_CHECK(calls.total() == 0);
}

DOCTEST_TEST_CASE("fused f32 RMSNorm backward: whole-encoder gradients as autograd's, whatever the thread count") {
  torch::manual_seed(8);
  for (bool gemma : {false, true}) {
    DOCTEST_CAPTURE(gemma);
    const ModelConfig config = gemma ? gemma3_config() : qwen2_config(64, 96, 2);
    Encoder enc(config, AttentionMode::Bidirectional, torch::TensorOptions().dtype(torch::kFloat));
    enc->init_parameters(14);
    const torch::Tensor ids = torch::randint(0, 300, {3, 9}, torch::kLong);
    torch::Tensor mask = torch::ones({3, 9}, torch::kLong);
    mask[2].narrow(0, 4, 5).zero_();
    auto grads = [&](bool fused, int threads, int* fused_backwards) {
      FusedKernels switch_(fused);
      const int before = at::get_num_threads();
      at::set_num_threads(threads);
      FusedCallCounter calls;
      enc->zero_grad();
      const torch::Tensor e = enc->embed(ids, mask, kalm::model::Pooling::Mean);
      (e * torch::linspace(-1, 1, e.size(1))).sum().backward();
      *fused_backwards = calls["rms_normalize_backward"];
      at::set_num_threads(before);
      std::vector<torch::Tensor> out;
      for (const auto& p : enc->parameters()) out.push_back(p.grad().clone());
      return std::make_pair(e.detach(), out);
    };
    int n_fused = 0, n_fused2 = 0, n_plain = 0;
    const auto [e_fused, g_fused] = grads(true, 1, &n_fused);
    const auto [e_fused2, g_fused2] = grads(true, 2, &n_fused2);
    const auto [e_plain, g_plain] = grads(false, 1, &n_plain);
    // Qwen2: two norms per layer and the final one; Gemma3 four per layer, the
    // final one and q_norm / k_norm over every head's rows.
    const int norms = gemma ? 6 * static_cast<int>(config.num_hidden_layers) + 1
                            : 2 * static_cast<int>(config.num_hidden_layers) + 1;
    DOCTEST_CHECK(n_fused == norms);
    DOCTEST_CHECK(n_plain == 0);
    DOCTEST_CHECK(torch::equal(e_fused, e_plain));
    DOCTEST_REQUIRE(g_fused.size() == g_plain.size());
    for (std::size_t i = 0; i < g_fused.size(); ++i) {
      DOCTEST_CAPTURE(i);
      DOCTEST_CHECK(torch::equal(g_fused[i], g_fused2[i]));
      const double scale = g_plain[i].abs().max().item<double>();
      DOCTEST_CHECK((g_fused[i] - g_plain[i]).abs().max().item<double>() <= 1e-5 * std::max(scale, 1.0));
    }
  }
}
