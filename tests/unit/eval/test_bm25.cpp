// BM25 on hand-computed cases.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/eval/bm25.h"

using kalm::eval::Bm25Index;
using kalm::eval::bm25_tokenize;

namespace {
using Tokens = std::vector<std::string>;
}

DOCTEST_TEST_CASE("BM25 tokenisation: NFKC case folding, letters/marks/numbers, CJK per character") {
  DOCTEST_CHECK(bm25_tokenize("Hello, World! it's 2024") == Tokens{"hello", "world", "it", "s", "2024"});
  DOCTEST_CHECK(bm25_tokenize("Ｆｕｌｌ-width ＡＢＣ") == Tokens{"full", "width", "abc"});
  DOCTEST_CHECK(bm25_tokenize("Straße ΣΊΣΥΦΟΣ") == Tokens{"strasse", "σίσυφοσ"});
  DOCTEST_CHECK(bm25_tokenize("naïve cafe\xCC\x81") == Tokens{"naïve", "café"});  // combining mark joins
  DOCTEST_CHECK(bm25_tokenize("中文检索test") == Tokens{"中", "文", "检", "索", "test"});
  DOCTEST_CHECK(bm25_tokenize("snake_case  a\tb\nc") == Tokens{"snake", "case", "a", "b", "c"});
  DOCTEST_CHECK(bm25_tokenize("").empty());
  DOCTEST_CHECK(bm25_tokenize(" ,.;").empty());
  DOCTEST_CHECK_THROWS_AS(bm25_tokenize("ok \xFF bad", "doc 3"), kalm::FormatError);
  try {
    bm25_tokenize("ok \xC3", "doc 3");
    DOCTEST_FAIL("no error");
  } catch (const kalm::FormatError& e) {
    DOCTEST_CHECK(std::string(e.what()) == "doc 3: invalid UTF-8 at byte 3");
  }
}

DOCTEST_TEST_CASE("BM25 scores equal the Lucene formula computed by hand") {
  // Lengths 3, 2, 4; avgdl 3. "cat": df 2, "dog": df 2, "bird": df 1; N = 3.
  const std::vector<std::string> docs = {"the cat sat", "dog dog", "cat and a bird"};
  Bm25Index index(docs);
  DOCTEST_CHECK(index.size() == 3);
  DOCTEST_CHECK(index.average_length() == 3.0);
  DOCTEST_CHECK(index.document_frequency("cat") == 2);
  DOCTEST_CHECK(index.document_frequency("fish") == 0);
  const double idf2 = std::log(1 + (3 - 2 + 0.5) / (2 + 0.5));
  const double idf1 = std::log(1 + (3 - 1 + 0.5) / (1 + 0.5));
  DOCTEST_CHECK(index.idf("cat") == doctest::Approx(idf2).epsilon(1e-15));
  DOCTEST_CHECK(index.idf("fish") == doctest::Approx(std::log(1 + 3.5 / 0.5)).epsilon(1e-15));
  const double k1 = 1.2, b = 0.75;
  auto w = [&](double idf, double tf, double len) { return idf * tf / (tf + k1 * (1 - b + b * len / 3.0)); };

  auto hits = index.search("Cat bird", 10);
  DOCTEST_REQUIRE(hits.size() == 2);  // doc 1 has neither term
  DOCTEST_CHECK(hits[0].doc == 2);
  DOCTEST_CHECK(hits[0].score == doctest::Approx(w(idf2, 1, 4) + w(idf1, 1, 4)).epsilon(1e-14));
  DOCTEST_CHECK(hits[1].doc == 0);
  DOCTEST_CHECK(hits[1].score == doctest::Approx(w(idf2, 1, 3)).epsilon(1e-14));

  // tf saturation: "dog dog" in a 2-token doc.
  hits = index.search("dog", 1);
  DOCTEST_REQUIRE(hits.size() == 1);
  DOCTEST_CHECK(hits[0].doc == 1);
  DOCTEST_CHECK(hits[0].score == doctest::Approx(w(idf1, 2, 2)).epsilon(1e-14));

  // A repeated query token counts twice (Lucene, rank_bm25).
  DOCTEST_CHECK(index.search("dog dog", 1)[0].score == doctest::Approx(2 * w(idf1, 2, 2)).epsilon(1e-14));
  DOCTEST_CHECK(index.search("fish", 5).empty());
  DOCTEST_CHECK(index.search("cat", 0).empty());

  // Reranking given candidates, in candidate order, equal to search's scores.
  const auto scores = index.score("cat bird", {1, 2, 0, 2});
  DOCTEST_REQUIRE(scores.size() == 4);
  DOCTEST_CHECK(scores[0] == 0.0);
  DOCTEST_CHECK(scores[1] == index.search("cat bird", 1)[0].score);
  DOCTEST_CHECK(scores[2] == doctest::Approx(w(idf2, 1, 3)).epsilon(1e-14));
  DOCTEST_CHECK(scores[3] == scores[1]);
  DOCTEST_CHECK_THROWS_AS(index.score("cat", {3}), kalm::FormatError);
}

DOCTEST_TEST_CASE("BM25 options, ties and batch search") {
  // b = 0: no length normalisation, so equal tf gives equal scores; ties go to the lower index.
  kalm::eval::Bm25Options opt;
  opt.b = 0;
  opt.k1 = 2.0;
  Bm25Index index({"x y z w", "x", "y"}, opt);
  auto hits = index.search("x", 5);
  DOCTEST_REQUIRE(hits.size() == 2);
  DOCTEST_CHECK(hits[0].doc == 0);
  DOCTEST_CHECK(hits[1].doc == 1);
  DOCTEST_CHECK(hits[0].score == hits[1].score);
  const double idf = std::log(1 + (3 - 2 + 0.5) / 2.5);
  DOCTEST_CHECK(hits[0].score == doctest::Approx(idf * 1 / (1 + 2.0)).epsilon(1e-15));

  std::vector<std::string> queries;
  for (int i = 0; i < 100; ++i) queries.push_back(i % 2 ? "x" : "y z");
  const auto all = index.search_all(queries, 3);
  DOCTEST_REQUIRE(all.size() == 100);
  for (int i = 0; i < 100; ++i) {
    const auto one = index.search(queries[static_cast<std::size_t>(i)], 3);
    DOCTEST_REQUIRE(all[static_cast<std::size_t>(i)].size() == one.size());
    for (std::size_t j = 0; j < one.size(); ++j) {
      DOCTEST_CHECK(all[static_cast<std::size_t>(i)][j].doc == one[j].doc);
      DOCTEST_CHECK(all[static_cast<std::size_t>(i)][j].score == one[j].score);
    }
  }
  queries[57] = "bad \xFF";
  try {
    index.search_all(queries, 3);
    DOCTEST_FAIL("no error");
  } catch (const kalm::FormatError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("BM25 query 57") == 0);
  }

  opt = {};
  opt.k1 = -1;
  DOCTEST_CHECK_THROWS_AS(Bm25Index({"a"}, opt), kalm::UsageError);
  opt = {};
  opt.b = 1.5;
  DOCTEST_CHECK_THROWS_AS(Bm25Index({"a"}, opt), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(Bm25Index({"ok", "bad \xC0\x80"}), kalm::FormatError);

  Bm25Index empty({});
  DOCTEST_CHECK(empty.size() == 0);
  DOCTEST_CHECK(empty.search("a", 3).empty());
  Bm25Index blank({"", " "});
  DOCTEST_CHECK(blank.search("a", 3).empty());
}
