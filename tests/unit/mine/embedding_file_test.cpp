// Precomputed embedding files: shape and dtype checks with the file named.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include <unistd.h>

#include "kalm/error.h"
#include "kalm/io/safetensors.h"
#include "kalm/mine/retrieve.h"
#include "kalm/mine/text_embedder.h"

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("kalm_mine_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

}  // namespace

DOCTEST_TEST_CASE("load_embedding_file checks the tensor and converts to f32") {
  const std::string path = temp_path("emb.safetensors");
  const float rows[] = {1, 0, 0, 1, 0.5f, 0.5f};
  DOCTEST_SUBCASE("f32 [3, 2]") {
    kalm::io::SafetensorsWriter w;
    w.add("embeddings", kalm::io::DType::F32, {3, 2}, rows, sizeof rows);
    w.write(path);
    auto t = kalm::mine::load_embedding_file(path, 3, "rows");
    DOCTEST_CHECK((t.scalar_type() == torch::kFloat32));
    DOCTEST_CHECK(t.size(0) == 3);
    DOCTEST_CHECK(t[2][1].item<float>() == 0.5f);
    DOCTEST_CHECK_THROWS_WITH_AS(kalm::mine::load_embedding_file(path, 4, "one per group"),
                                 doctest::Contains("has 3 rows, expected 4: one per group"), kalm::FormatError);
  }
  DOCTEST_SUBCASE("f16 is converted") {
    const std::uint16_t half[] = {0x3C00, 0x3800};  // 1.0, 0.5
    kalm::io::SafetensorsWriter w;
    w.add("embeddings", kalm::io::DType::F16, {1, 2}, half, sizeof half);
    w.write(path);
    auto t = kalm::mine::load_embedding_file(path, 1, "rows");
    DOCTEST_CHECK((t.scalar_type() == torch::kFloat32));
    DOCTEST_CHECK(t[0][1].item<float>() == 0.5f);
  }
  DOCTEST_SUBCASE("wrong name, rank or dtype") {
    kalm::io::SafetensorsWriter w;
    w.add("vectors", kalm::io::DType::F32, {3, 2}, rows, sizeof rows);
    w.write(path);
    DOCTEST_CHECK_THROWS_WITH_AS(kalm::mine::load_embedding_file(path, 3, "rows"),
                                 doctest::Contains("no tensor named 'embeddings'"), kalm::FormatError);
    kalm::io::SafetensorsWriter w1;
    w1.add("embeddings", kalm::io::DType::F32, {6}, rows, sizeof rows);
    w1.write(path);
    DOCTEST_CHECK_THROWS_AS(kalm::mine::load_embedding_file(path, 6, "rows"), kalm::FormatError);
    const std::int32_t ints[] = {1, 2};
    kalm::io::SafetensorsWriter w2;
    w2.add("embeddings", kalm::io::DType::I32, {1, 2}, ints, sizeof ints);
    w2.write(path);
    DOCTEST_CHECK_THROWS_AS(kalm::mine::load_embedding_file(path, 1, "rows"), kalm::FormatError);
  }
  std::filesystem::remove(path);
}

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
