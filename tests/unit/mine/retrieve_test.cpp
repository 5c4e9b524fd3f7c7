// Exact retrieval over precomputed embeddings.
#include <doctest/doctest.h>

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
