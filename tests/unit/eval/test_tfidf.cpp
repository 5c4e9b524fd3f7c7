// TF-IDF vectors (tfidf.h): scikit-learn's TfidfVectorizer formula (smooth
// idf, raw counts, L2 rows), char_wb trigrams, the max_features cut. Expected
// values computed by hand from idf(t) = ln((1 + n) / (1 + df)) + 1.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/eval/tfidf.h"

using kalm::eval::TfidfFeatures;
using kalm::eval::tfidf_features_of;
using kalm::eval::tfidf_vectors;

DOCTEST_TEST_CASE("tfidf_vectors: smooth idf, raw counts, unit rows, columns in byte order") {
  const auto v = tfidf_vectors({"The cat sat", "the DOG", "cat cat"}, TfidfFeatures::kWords, 100);
  // Columns: cat, dog, sat, the. idf: cat/the (df 2) ln(4/3)+1, dog/sat (df 1) ln 2+1.
  DOCTEST_REQUIRE(v.sizes() == torch::IntArrayRef({3, 4}));
  const auto expected = torch::tensor({{0.5178561f, 0.0f, 0.6809186f, 0.5178561f},
                                       {0.0f, 0.7959605f, 0.0f, 0.6053485f},
                                       {1.0f, 0.0f, 0.0f, 0.0f}});
  DOCTEST_CHECK(torch::allclose(v, expected, 0, 1e-6));
}

DOCTEST_TEST_CASE("tfidf_vectors: max_features keeps the most frequent (ties by bytes); a row left empty is zero") {
  const auto v = tfidf_vectors({"a a a b b c", "c d"}, TfidfFeatures::kWords, 2);
  // Totals a 3, b 2, c 2, d 1: a and b (b before c on the tie).
  DOCTEST_REQUIRE(v.sizes() == torch::IntArrayRef({2, 2}));
  DOCTEST_CHECK(torch::allclose(v[0], torch::tensor({0.8320503f, 0.5547002f}), 0, 1e-6));
  DOCTEST_CHECK(torch::equal(v[1], torch::zeros({2})));
  // Nothing at all: one zero column, a row per text.
  const auto empty = tfidf_vectors({"", "!!"}, TfidfFeatures::kWords, 10);
  DOCTEST_CHECK(empty.sizes() == torch::IntArrayRef({2, 1}));
  DOCTEST_CHECK(torch::equal(empty, torch::zeros({2, 1})));
  DOCTEST_CHECK_THROWS_AS(tfidf_vectors({"a"}, TfidfFeatures::kWords, 0), kalm::UsageError);
}

DOCTEST_TEST_CASE("tfidf features: char_wb trigrams over the case-folded tokens, by code point") {
  DOCTEST_CHECK(tfidf_features_of("Ab, a", TfidfFeatures::kCharTrigrams) ==
                std::vector<std::string>{" ab", "ab ", " a "});
  DOCTEST_CHECK(tfidf_features_of("naïve", TfidfFeatures::kCharTrigrams) ==
                std::vector<std::string>{" na", "naï", "aïv", "ïve", "ve "});
  DOCTEST_CHECK(tfidf_features_of("Straße x", TfidfFeatures::kWords) == std::vector<std::string>{"strasse", "x"});
  // Invalid UTF-8 is refused, naming the text.
  try {
    tfidf_vectors({"ok", std::string("bad \xff")}, TfidfFeatures::kCharTrigrams, 10, "pairs.jsonl");
    DOCTEST_FAIL("invalid UTF-8 accepted");
  } catch (const kalm::FormatError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("pairs.jsonl (text 1)") != std::string::npos);
  }
}
