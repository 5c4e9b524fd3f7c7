// The Unigram model of tokenizer.json (lib/src/text/unigram_model.cpp), on small
// vocabularies whose best paths can be worked out by hand: highest total score,
// unk for characters no piece covers (lowest score - 10), runs of unk fused,
// byte fallback, ties to the first path found. Parity on real models:
// test_spm_export_parity.cpp (LlamaTokenizerFast's ids from the Rust library).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/text/tokenizer.h"

namespace {

using Ids = std::vector<int32_t>;

std::unique_ptr<kalm::text::Tokenizer> unigram(const std::string& vocab, const std::string& extra = "") {
  return kalm::text::parse_hf_tokenizer_json(
      R"({"version": "1.0", "model": {"type": "Unigram", "vocab": [)" + vocab + "]" + extra + "}}", {},
      "unigram.json");
}

Ids ids(const kalm::text::Tokenizer& tok, const std::string& text) {
  return tok.encode(text, kalm::text::EncodeOptions{false, std::nullopt}).ids;
}

const char* kAbcd =
    R"(["<unk>", 0.0], ["a", 0.0], ["b", 0.0], ["c", 0.0], ["d", 0.0], ["cd", 1.0], ["ab", 2.0], ["abc", 5.0], ["abcd", 10.0])";

}  // namespace

DOCTEST_TEST_CASE("unigram: the best-scoring segmentation, unknown characters fused into one unk") {
  auto tok = unigram(kAbcd, R"(, "unk_id": 0)");
  // abcd (10) + a + cd (1) beats abc + d + ...; "xx" is unknown, fused: one <unk>.
  DOCTEST_CHECK(ids(*tok, "abcdacdxx") == Ids{8, 1, 5, 0});
  DOCTEST_CHECK(ids(*tok, "ab") == Ids{6});
  DOCTEST_CHECK(ids(*tok, "x") == Ids{0});
  // Unknown characters apart stay apart; a multi-byte unknown is one character.
  DOCTEST_CHECK(ids(*tok, "xaé") == Ids{0, 1, 0});
  DOCTEST_CHECK(ids(*tok, "") == Ids{});
  DOCTEST_CHECK(tok->vocab_size() == 9);
  DOCTEST_CHECK(tok->token_to_id("abc") == 7);
  DOCTEST_CHECK(tok->id_to_token(5) == "cd");
}

DOCTEST_TEST_CASE("unigram: ties keep the first path found, lower scores lose") {
  // "ab" alone (-1.0) against a + b (-0.5 + -0.5): equal, and "ab" is found
  // first (from start 0, before "b" from start 1), so it stays.
  auto tie = unigram(R"(["<unk>", 0.0], ["a", -0.5], ["b", -0.5], ["ab", -1.0])", R"(, "unk_id": 0)");
  DOCTEST_CHECK(ids(*tie, "ab") == Ids{3});
  auto split = unigram(R"(["<unk>", 0.0], ["a", -0.5], ["b", -0.5], ["ab", -1.1])", R"(, "unk_id": 0)");
  DOCTEST_CHECK(ids(*split, "ab") == Ids{1, 2});
  // An unknown character costs min score - 10 = -12 here: "zab" must still take
  // the unk and then the best path over "ab".
  auto low = unigram(R"(["<unk>", 0.0], ["a", -2.0], ["b", -2.0], ["ab", -1.0])", R"(, "unk_id": 0)");
  DOCTEST_CHECK(ids(*low, "zab") == Ids{0, 3});
}

DOCTEST_TEST_CASE("unigram: byte fallback") {
  std::string vocab = R"(["<unk>", 0.0], ["a", -1.0])";
  for (int b = 0; b < 256; ++b) {
    char name[16];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab += std::string(R"(, [")") + name + R"(", -5.0])";
  }
  auto tok = unigram(vocab, R"(, "unk_id": 0, "byte_fallback": true)");
  // "é" is C3 A9: ids 2 + 0xC3 and 2 + 0xA9; a fused run "éé" gives four bytes.
  DOCTEST_CHECK(ids(*tok, "aé") == Ids{1, 2 + 0xC3, 2 + 0xA9});
  DOCTEST_CHECK(ids(*tok, "éé") == Ids{2 + 0xC3, 2 + 0xA9, 2 + 0xC3, 2 + 0xA9});
  // Byte fallback needs every byte piece; without them the run is one unk.
  auto partial = unigram(R"(["<unk>", 0.0], ["a", -1.0], ["<0xC3>", -5.0])", R"(, "unk_id": 0, "byte_fallback": true)");
  DOCTEST_CHECK(ids(*partial, "éa") == Ids{0, 1});
}

DOCTEST_TEST_CASE("unigram: malformed or unsupported models are refused with the key named") {
  const auto message = [](const std::string& vocab, const std::string& extra) {
    try {
      unigram(vocab, extra);
    } catch (const kalm::ModelError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  DOCTEST_CHECK(message(kAbcd, R"(, "unk_id": 9)").find("unigram.json.model.unk_id") != std::string::npos);
  DOCTEST_CHECK(message("", R"(, "unk_id": 0)").find("empty") != std::string::npos);
  DOCTEST_CHECK(message(R"(["a"])", "").find("unigram.json.model.vocab[0]") != std::string::npos);
  DOCTEST_CHECK(message(R"(["a", "x"])", "").find("unigram.json.model.vocab[0][1]") != std::string::npos);
  DOCTEST_CHECK(message(kAbcd, R"(, "unk_id": 0, "dropout": 0.1)").find("unigram.json.model.dropout") !=
                std::string::npos);
  DOCTEST_CHECK(message(kAbcd, "").find("(accepted)") != std::string::npos);
  // Without an unk_id, text the pieces cannot cover is an error, never dropped.
  auto no_unk = unigram(kAbcd);
  DOCTEST_CHECK(ids(*no_unk, "abcd") == Ids{8});
  DOCTEST_CHECK_THROWS_AS(ids(*no_unk, "abx"), kalm::ModelError);
  // Another model type is named in the error.
  try {
    kalm::text::parse_hf_tokenizer_json(R"({"model": {"type": "WordPiece", "vocab": {}}})", {}, "wp.json");
    DOCTEST_FAIL("WordPiece accepted");
  } catch (const kalm::ModelError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("wp.json.model.type") != std::string::npos);
    DOCTEST_CHECK(std::string(e.what()).find("WordPiece") != std::string::npos);
  }
}
