// Exact retrieval over precomputed embeddings.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "kalm/error.h"
#include "kalm/io/safetensors.h"
#include "kalm/mine/retrieve.h"
#include "kalm/mine/text_embedder.h"

DOCTEST_TEST_CASE("retrieve: order, k capped at the pool, dimension mismatch") {
  auto pool = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 0.0f}).reshape({3, 2});
  auto q = torch::tensor({1.0f, 0.5f}).reshape({1, 2});
  auto hits = kalm::mine::retrieve(q, pool, 10);
  DOCTEST_REQUIRE(hits.size() == 1);
  DOCTEST_REQUIRE(hits[0].size() == 3);
  DOCTEST_CHECK(hits[0][0].index == 0);  // tie with row 2: lower index first
  DOCTEST_CHECK(hits[0][1].index == 2);
  DOCTEST_CHECK(hits[0][2].index == 1);
  DOCTEST_CHECK(hits[0][2].score == 0.5f);
  DOCTEST_CHECK(kalm::mine::retrieve(q, pool.slice(0, 0, 0), 5)[0].empty());
  DOCTEST_CHECK_THROWS_AS(kalm::mine::retrieve(torch::ones({1, 3}), pool, 2), kalm::FormatError);
}

DOCTEST_TEST_CASE("the tools search where the model runs: --device decides the search device and auto's precision") {
  kalm::mine::ModelFlags flags;
  flags.device = "cpu";
  flags.search_precision = "auto";
  DOCTEST_CHECK(kalm::mine::search_device_of(flags).is_cpu());
  DOCTEST_CHECK(kalm::mine::search_precision_of(flags) ==
                kalm::search::resolve_search_precision("auto", torch::kCPU));
  flags.device = "tpu";
  DOCTEST_CHECK_THROWS_AS(kalm::mine::search_device_of(flags), kalm::UsageError);
  flags.device = "cuda";
  if (torch::cuda::is_available()) {
    DOCTEST_CHECK(kalm::mine::search_device_of(flags).is_cuda());
    DOCTEST_CHECK(kalm::mine::search_precision_of(flags) == kalm::search::SearchPrecision::BF16);
    // A search on the GPU returns what the CPU's returns.
    torch::manual_seed(2);
    auto pool = torch::randn({300, 16});
    auto q = torch::randn({7, 16});
    auto cpu = kalm::mine::retrieve(q, pool, 5);
    auto gpu = kalm::mine::retrieve(q, pool, 5, kalm::search::SearchPrecision::F32, torch::Device("cuda"));
    for (std::size_t i = 0; i < cpu.size(); ++i)
      for (std::size_t j = 0; j < cpu[i].size(); ++j) DOCTEST_CHECK(cpu[i][j].index == gpu[i][j].index);
    // With TF32 allowed process-wide (--dtype tf32), the search still multiplies
    // in float32 (TF32's 10-bit inputs would move scores by ~1e-3) and puts the
    // setting back.
    at::globalContext().setAllowTF32CuBLAS(true);
    auto pool_big = torch::randn({2000, 256});
    auto q_big = torch::randn({20, 256});
    auto exact = kalm::mine::retrieve(q_big, pool_big, 3);
    auto tf32 = kalm::mine::retrieve(q_big, pool_big, 3, kalm::search::SearchPrecision::F32, torch::Device("cuda"));
    DOCTEST_CHECK(at::globalContext().allowTF32CuBLAS());
    at::globalContext().setAllowTF32CuBLAS(false);
    for (std::size_t i = 0; i < exact.size(); ++i)
      for (std::size_t j = 0; j < exact[i].size(); ++j) {
        DOCTEST_CHECK(exact[i][j].index == tf32[i][j].index);
        DOCTEST_CHECK(std::abs(exact[i][j].score - tf32[i][j].score) < 1e-4f * std::abs(exact[i][j].score) + 1e-4f);
      }
  } else {
    DOCTEST_CHECK_THROWS_AS(kalm::mine::search_device_of(flags), kalm::UsageError);
  }
}
