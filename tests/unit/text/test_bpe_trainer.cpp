// train_byte_level_bpe (lib/src/text/bpe_trainer.cpp): the tokenizer.json it
// writes loads, covers every byte, decodes back to the text, merges the most
// frequent pairs first and is reproducible; bad options are refused.
// transformers' reading of the same file: tests/cli/export_st6.sh.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/text/tokenizer.h"

namespace {

std::vector<std::string> corpus() {
  std::vector<std::string> texts;
  for (int i = 0; i < 40; ++i) {
    texts.push_back("the cat sleeps on the mat " + std::to_string(i));
    texts.push_back("the dog runs in the park\nand the bird sings");
    texts.push_back("Ünïcödé straße 東京 it's fine");
  }
  return texts;
}

}  // namespace

DOCTEST_TEST_CASE("byte-level BPE: the trained tokenizer.json loads, round-trips and merges frequent words") {
  kalm::text::ByteLevelBpeTrainOptions o;
  o.vocab_size = 300;
  const std::string json = kalm::text::train_byte_level_bpe(corpus(), o);
  auto tok = kalm::text::parse_hf_tokenizer_json(
      json, R"({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})",
      "trained.json");
  DOCTEST_CHECK(tok->vocab_size() == 300);
  DOCTEST_CHECK(tok->pad_id() == 299);  // the special token comes after the merges
  DOCTEST_CHECK(tok->eos_id() == 299);
  DOCTEST_CHECK(tok->num_special_tokens_added() == 0);
  const kalm::text::EncodeOptions plain{false, std::nullopt};
  // " the" is the most frequent word: one token (GPT-2's "Ġ" stands for the space).
  DOCTEST_CHECK(tok->token_to_id("\xC4\xA0the").has_value());
  DOCTEST_CHECK(tok->encode(" the", plain).ids.size() == 1);
  // Every text, seen or not, encodes without unk and decodes to itself.
  for (const std::string& text : {std::string("the cat sleeps on the mat 7"), std::string("never seen: ½ ∑ 🙂 \t x"),
                                 std::string("Ünïcödé 東京\n\n  spaces")}) {
    DOCTEST_INFO(text);
    const auto ids = tok->encode(text, plain).ids;
    DOCTEST_CHECK(!ids.empty());
    DOCTEST_CHECK(tok->decode(ids, false) == text);
  }
  // The special token's text is cut out whole.
  const auto ids = tok->encode("a<|endoftext|>b", plain).ids;
  DOCTEST_CHECK(ids.size() == 3);
  DOCTEST_CHECK(ids[1] == 299);
  // Reproducible: the same texts give the same file.
  DOCTEST_CHECK(kalm::text::train_byte_level_bpe(corpus(), o) == json);
}

DOCTEST_TEST_CASE("byte-level BPE: a corpus with fewer pairs than the budget stops early") {
  kalm::text::ByteLevelBpeTrainOptions o;
  o.vocab_size = 5000;
  auto tok = kalm::text::parse_hf_tokenizer_json(kalm::text::train_byte_level_bpe({"ab ab"}, o), {}, "small.json");
  // 256 bytes, "ab", " a"... then " ab": every pair merged, plus the special token.
  DOCTEST_CHECK(tok->vocab_size() < 270);
  DOCTEST_CHECK(tok->encode("ab ab", kalm::text::EncodeOptions{false, std::nullopt}).ids.size() == 2);
}

DOCTEST_TEST_CASE("byte-level BPE: bad options and input are refused") {
  kalm::text::ByteLevelBpeTrainOptions o;
  o.vocab_size = 257;  // bytes + <|endoftext|>, no room for a merge
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_byte_level_bpe(corpus(), o), kalm::UsageError);
  o.vocab_size = 300;
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_byte_level_bpe({}, o), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_byte_level_bpe({"ok", "bad \xC3"}, o), kalm::FormatError);
  o.special_tokens = {"<a>", "<a>"};
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_byte_level_bpe(corpus(), o), kalm::UsageError);
}
