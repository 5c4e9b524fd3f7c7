// bench/embed: kalm's encoding engine on a random checkpoint shaped like
// Qwen2-0.5B (896 hidden, 24 layers, 14 heads, 2 KV heads, 4864 FFN, vocab
// 151936), against the matrix-multiply peak measured in the same run.
//
//   kalm-bench-embed [--layers N] [--texts N] [--seed S] [--save-dir DIR] [--batch-tokens N] [--bf16-only]
//   kalm-bench-embed --kernels
//
// Prints, for a corpus of mixed lengths (log-uniform 8..512 tokens):
//   gemm_gflops_f32 / gemm_gflops_bf16   measured peak of at::matmul at model shapes
//   flops_per_token                      2·(non-embedding params) + attention (from the shapes)
//   bound_tokens_per_s                   peak / flops_per_token (using the corpus' mean length)
//   tokens/s for f32 sorted by length, f32 in input order, bf16 sorted by length,
//     and bf16 again with the fused CPU kernels off (LibTorch's op-by-op path)
//   cosine(bf16, f32) and cosine(bf16 fused, bf16 op by op), minimum over texts
// --save-dir writes the model and the corpus (token ids, JSONL) so that
// bench/embed/transformers_peer.py can time transformers on the same input.
// --bf16-only skips the f32 runs and the cosine (for profiling the bf16 path).
// --kernels times each fused bf16 CPU kernel against the LibTorch op chain it
// replaces, on one 1024-token batch of the model's shapes, and exits.
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kalm/encode/engine.h"
#include "kalm/core/host_allocator.h"
#include "kalm/model/checkpoint.h"
#include "kalm/model/pooling.h"
#include "kalm/model/transformer.h"

#include "../common/gemm_rate.h"
// The fused kernels' internal header: --kernels times them one by one.
#include "../../lib/src/model/fused_cpu.h"

namespace {

using kalm::bench::gemm_gflops;
using kalm::bench::seconds_since;

class EncoderEmbedder : public kalm::encode::BatchEmbedder {
 public:
  explicit EncoderEmbedder(const kalm::model::Encoder& e) : encoder_(e) {}
  torch::Tensor embed(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& pool_mask) override {
    return kalm::model::pool(encoder_->forward(ids, mask), pool_mask, kalm::model::Pooling::Mean);
  }
  torch::Device device() const override { return torch::kCPU; }

 private:
  const kalm::model::Encoder& encoder_;
};

// Mean milliseconds of f over 50 calls after one warm-up call.
template <class F>
double milliseconds(F&& f) {
  f();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) f();
  return seconds_since(t0) * 1e3 / 50;
}

// Each fused kernel against the op-by-op chain of transformer.cpp it replaces.
void time_kernels() {
  namespace fused = kalm::model::detail;
  torch::NoGradGuard no_grad;
  const auto bf16 = torch::kBFloat16;
  const std::int64_t B = 32, L = 32, hidden = 896, ffn = 4864, heads = 14, kv = 2, D = 64;
  const auto x = torch::randn({B, L, hidden}).to(bf16), y = torch::randn({B, L, hidden}).to(bf16);
  const auto w = torch::randn({hidden}).to(bf16);
  const auto gate_up = torch::randn({B, L, 2 * ffn}).to(bf16);
  const auto qkv = torch::randn({B, L, (heads + 2 * kv) * D}).to(bf16);
  const auto q = qkv.narrow(2, 0, heads * D).view({B, L, heads, D});
  const auto cos = torch::randn({L, D}).to(bf16), sin = torch::randn({L, D}).to(bf16);
  auto norm_chain = [&](const torch::Tensor& v) {
    return w * at::rms_norm(v.to(torch::kFloat), {hidden}, {}, 1e-6).to(bf16);
  };
  struct Row {
    const char* name;
    double fused_ms, op_by_op_ms;
  };
  const Row rows[] = {
      {"rms_norm", milliseconds([&] { fused::rms_norm_bf16(x, w, 1e-6, false); }),
       milliseconds([&] { norm_chain(x); })},
      {"add_rms_norm", milliseconds([&] { fused::add_rms_norm_bf16(x, y, w, 1e-6, false); }),
       milliseconds([&] { norm_chain(x + y); })},
      {"silu_gate", milliseconds([&] { fused::silu_gate_bf16(gate_up); }),
       milliseconds([&] {
         const auto parts = gate_up.chunk(2, -1);
         torch::silu(parts[0]) * parts[1];
       })},
      {"rotary (q)", milliseconds([&] { fused::rotary_bf16(q, cos, sin); }),
       milliseconds([&] {
         const auto c = cos.view({1, L, 1, D}), s = sin.view({1, L, 1, D});
         q* c + torch::cat({-q.narrow(-1, D / 2, D / 2), q.narrow(-1, 0, D / 2)}, -1) * s;
       })},
  };
  std::printf("threads %d, batch %lld x %lld tokens, bf16, fused row loops for %s\n", at::get_num_threads(),
              static_cast<long long>(B), static_cast<long long>(L), kalm::model::fused_cpu_kernel_isa().c_str());
  for (const Row& r : rows)
    std::printf("kernel %-13s fused %.3f ms  op_by_op %.3f ms  speedup %.2fx\n", r.name, r.fused_ms, r.op_by_op_ms,
                r.op_by_op_ms / r.fused_ms);
  // The memory side: one read and one write of the gate/up activation.
  std::printf("copy of the gate/up activation %.3f ms\n", milliseconds([&] { gate_up.clone(); }));
}

}  // namespace

static int run(int argc, char** argv) {
  std::int64_t layers = 24, texts = 64, seed = 0;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string save_dir;
  bool bf16_only = false, kernels = false;
  std::int64_t batch_tokens = 0;  // 0: kalm's default for the CPU
  const char* usage =
      "usage: kalm-bench-embed [--layers N] [--texts N] [--seed N] [--save-dir DIR] [--threads N]\n"
      "                        [--batch-tokens N] [--bf16-only] [--kernels]\n";
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (flag != "--bf16-only" && flag != "--kernels" && i + 1 >= argc) throw std::runtime_error(flag + " needs a value");
    if (flag == "--layers") layers = std::stoll(argv[i + 1]);
    else if (flag == "--texts") texts = std::stoll(argv[i + 1]);
    else if (flag == "--seed") seed = std::stoll(argv[i + 1]);
    else if (flag == "--save-dir") save_dir = argv[i + 1];
    else if (flag == "--threads") threads = std::stoi(argv[i + 1]);  // the free cores on a shared machine
    else if (flag == "--batch-tokens") batch_tokens = std::stoll(argv[i + 1]);
    else if (flag == "--bf16-only") { bf16_only = true; --i; }
    else if (flag == "--kernels") { kernels = true; --i; }
    else throw std::runtime_error("unknown flag " + flag +
                                  " (--layers, --texts, --seed, --save-dir, --threads, --batch-tokens, --bf16-only, --kernels)");
  }
  // What the tools do (core::configure_runtime); KALM_BENCH_NO_BLOCK_CACHE=1 leaves LibTorch's allocator.
  if (std::getenv("KALM_BENCH_NO_BLOCK_CACHE") == nullptr) kalm::core::install_host_block_cache();
  std::printf("host_block_cache %s\n", kalm::core::host_block_cache_installed() ? "on" : "off");
  at::set_num_threads(threads);
  torch::NoGradGuard no_grad;
  if (kernels) {
    time_kernels();
    return 0;
  }

  kalm::model::ModelConfig cfg;
  cfg.architecture = kalm::model::Architecture::Qwen2;
  cfg.model_type = "qwen2";
  cfg.hidden_size = 896;
  cfg.num_hidden_layers = layers;
  cfg.num_attention_heads = 14;
  cfg.num_key_value_heads = 2;
  cfg.head_dim = 64;
  cfg.intermediate_size = 4864;
  cfg.vocab_size = 151936;
  cfg.max_position_embeddings = 32768;
  cfg.rope_theta = 1000000.0;
  cfg.hidden_activation = "silu";
  cfg.tie_word_embeddings = true;
  cfg.torch_dtype = "float32";
  cfg.layer_types.assign(static_cast<std::size_t>(layers), kalm::model::LayerAttention::Full);

  // Mixed lengths, log-uniform in [8, 512], fixed seed.
  std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
  std::uniform_real_distribution<double> loglen(std::log(8.0), std::log(512.0));
  std::uniform_int_distribution<int> token(1000, 150000);
  std::vector<std::vector<std::int32_t>> corpus(static_cast<std::size_t>(texts));
  std::int64_t total_tokens = 0;
  double sum_sq_len = 0;
  for (auto& seq : corpus) {
    seq.resize(static_cast<std::size_t>(std::lround(std::exp(loglen(rng)))));
    for (auto& t : seq) t = token(rng);
    total_tokens += static_cast<std::int64_t>(seq.size());
    sum_sq_len += static_cast<double>(seq.size()) * seq.size();
  }
  const double mean_len_weighted = sum_sq_len / total_tokens;  // attention cost per token ~ its sequence length

  // FLOPs per token: every weight matrix once (2 flops per weight), plus QK^T and
  // AV (2·2·L·heads·head_dim per token per layer), L weighted by tokens.
  const double h = 896, kv = 2 * 64, ffn = 4864;
  const double per_layer_weights = h * (h + 2 * kv) + h * h + 3 * h * ffn;
  const double flops_per_token =
      layers * (2 * per_layer_weights + 4 * mean_len_weighted * 14 * 64);

  const double peak_f32 = gemm_gflops(2048, 896, 4864, torch::kFloat);
  const double peak_bf16 = gemm_gflops(2048, 896, 4864, torch::kBFloat16);
  std::printf("threads %d\ntexts %lld\ntokens %lld\n", at::get_num_threads(), static_cast<long long>(texts),
              static_cast<long long>(total_tokens));
  std::printf("gemm_gflops_f32 %.1f\ngemm_gflops_bf16 %.1f\n", peak_f32, peak_bf16);
  std::printf("flops_per_token %.3e\nbound_tokens_per_s_f32 %.1f\nbound_tokens_per_s_bf16 %.1f\n", flops_per_token,
              peak_f32 * 1e9 / flops_per_token, peak_bf16 * 1e9 / flops_per_token);

  // Causal, so that stock transformers Qwen2Model (bench/embed/transformers_peer.py) is the same model.
  kalm::model::Encoder encoder(cfg, kalm::model::AttentionMode::Causal);
  encoder->init_parameters(static_cast<std::uint64_t>(seed));
  encoder->eval();

  auto run = [&](bool sorted, std::int64_t batch_tokens, const char* label) {
    EncoderEmbedder embedder(encoder);
    kalm::encode::EngineOptions opt;
    opt.batch_tokens = batch_tokens;
    opt.sort_by_length = sorted;
    kalm::encode::Engine engine(embedder, opt);
    auto t0 = std::chrono::steady_clock::now();
    auto out = engine.embed(corpus);
    double secs = seconds_since(t0);
    std::printf("%s tokens_per_s %.1f  (padded %.0f%%, %.1f s, batch tokens %lld)\n", label, total_tokens / secs,
                100.0 * (engine.stats().padded_tokens - engine.stats().tokens) / engine.stats().padded_tokens, secs,
                static_cast<long long>(opt.batch_tokens ? opt.batch_tokens : kalm::encode::kDefaultBatchTokensCpu));
    std::fflush(stdout);
    return out;
  };
  // bf16 with the fused element-wise kernels (the default) and without.
  auto run_bf16 = [&] {
    auto fused = run(true, batch_tokens, "kalm_bf16_sorted");
    kalm::model::set_fused_cpu_kernels(false);
    auto op_by_op = run(true, batch_tokens, "kalm_bf16_sorted_op_by_op");
    kalm::model::set_fused_cpu_kernels(true);
    auto cos = torch::nn::functional::cosine_similarity(
        fused, op_by_op, torch::nn::functional::CosineSimilarityFuncOptions().dim(1));
    std::printf("cosine_fused_vs_op_by_op_min %.6f\n", cos.min().item<double>());
    return fused;
  };
  if (bf16_only) {
    encoder->to(torch::kBFloat16);
    run_bf16();
    return 0;
  }
  auto f32 = run(true, batch_tokens, "kalm_f32_sorted");
  run(false, batch_tokens, "kalm_f32_input_order");
  if (!save_dir.empty()) {
    kalm::model::save_model(save_dir, *encoder);
    std::ofstream ids(save_dir + "/corpus_ids.jsonl");
    for (std::size_t i = 0; i < corpus.size(); ++i) {
      ids << "{\"id\":\"" << i << "\",\"input_ids\":[";
      for (std::size_t t = 0; t < corpus[i].size(); ++t) ids << (t ? "," : "") << corpus[i][t];
      ids << "]}\n";
    }
    auto f = f32.contiguous();
    std::ofstream raw(save_dir + "/kalm_f32_embeddings.f32", std::ios::binary);
    raw.write(reinterpret_cast<const char*>(f.data_ptr<float>()), f.numel() * 4);
  }
  encoder->to(torch::kBFloat16);
  auto bf16 = run_bf16();
  auto cos = torch::nn::functional::cosine_similarity(
      f32, bf16, torch::nn::functional::CosineSimilarityFuncOptions().dim(1));
  std::printf("cosine_bf16_vs_f32_min %.5f\n", cos.min().item<double>());
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kalm-bench-embed: %s\n", e.what());
    return 2;
  }
}
