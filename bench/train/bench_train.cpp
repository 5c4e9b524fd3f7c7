// bench/train helper: the hardware bound that bench/train/run.sh sets kalm-train
// against, measured in the same run.
//
//   kalm-bench-train CONFIG ROWS [THREADS]
//
// THREADS (default: all cores) should be kalm-train's --threads: the bound is
// the rate of the same number of threads.
//
// Prints:
//   gemm_gflops_f32        best-of-3 at::matmul peak at bench/embed's shape
//                          (2048 x 896 x 4864), the machine's f32 GEMM rate
//   gemm_gflops_f32_model  the same at the model's FFN shape (ROWS x hidden x
//                          intermediate), what small matrices reach
//   non_embedding_params   parameters outside embed_tokens (CONFIG, Qwen2/Gemma3)
//   embedding_params
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "kalm/model/config.h"
#include "kalm/model/transformer.h"

#include "../common/gemm_rate.h"

using kalm::bench::gemm_gflops;

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: kalm-bench-train CONFIG ROWS [THREADS]\n");
    return 2;
  }
  at::set_num_threads(argc == 4 ? std::stoi(argv[3]) : static_cast<int>(std::thread::hardware_concurrency()));
  torch::NoGradGuard no_grad;
  const auto config = kalm::model::parse_config_file(argv[1]);
  const std::int64_t rows = std::stoll(argv[2]);
  kalm::model::Encoder encoder(config, config.default_attention());
  std::int64_t embedding = 0, other = 0;
  for (const auto& p : encoder->named_parameters()) {
    if (p.key().find("embed_tokens") != std::string::npos)
      embedding += p.value().numel();
    else
      other += p.value().numel();
  }
  std::printf("threads %d\n", at::get_num_threads());
  std::printf("gemm_gflops_f32 %.1f\n", gemm_gflops(2048, 896, 4864));
  std::printf("gemm_gflops_f32_model %.1f\n", gemm_gflops(rows, config.hidden_size, config.intermediate_size));
  std::printf("non_embedding_params %lld\nembedding_params %lld\n", static_cast<long long>(other),
              static_cast<long long>(embedding));
  return 0;
}
