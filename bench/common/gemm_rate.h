#pragma once
// The hardware side of the benchmarks' ratios: the GEMM rate LibTorch reaches
// on this machine, measured in the same run as the figure it is set against.

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace kalm::bench {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of 3 one-second rounds of [m,k]x[k,n] products in `dtype`, in GFLOP/s
// (2·m·k·n per product), after one warm-up product.
inline double gemm_gflops(std::int64_t m, std::int64_t k, std::int64_t n, torch::ScalarType dtype = torch::kFloat) {
  const auto a = torch::randn({m, k}).to(dtype);
  const auto b = torch::randn({k, n}).to(dtype);
  torch::matmul(a, b);
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    int reps = 0;
    while (seconds_since(t0) < 1.0) {
      torch::matmul(a, b);
      ++reps;
    }
    best = std::max(best, 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n) * reps /
                              seconds_since(t0) / 1e9);
  }
  return best;
}

}  // namespace kalm::bench
