// Pipeline components that Qwen/Gemma do not use, on a toy BPE (a b 1 2 . and the
// metaspace ▁, with merges ab, ▁a, 12, ▁ab). Expected ids and decodes come from HF
// tokenizers (Node binding) on the same JSON.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kalm/text/tokenizer.h"

using Ids = std::vector<int32_t>;

namespace {

std::string toy(const std::string& normalizer, const std::string& pre, const std::string& decoder) {
  return R"({"version": "1.0", "added_tokens": [], "normalizer": )" + normalizer +
         R"(, "pre_tokenizer": )" + pre + R"(, "post_processor": null, "decoder": )" + decoder +
         R"(, "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": false, "byte_fallback": false,
      "vocab": {"<unk>": 0, "\u2581": 1, "a": 2, "b": 3, "1": 4, "2": 5, "ab": 6, "\u2581a": 7, "12": 8,
                ".": 9, "\u2581ab": 10, " ": 11},
      "merges": [["a", "b"], ["\u2581", "a"], ["1", "2"], ["\u2581a", "b"]]}})";
}

struct Case {
  const char* text;
  Ids ids;
  const char* decoded;
};

void check(const std::string& json, const std::vector<Case>& cases) {
  auto t = kalm::text::parse_hf_tokenizer_json(json);
  for (const Case& c : cases) {
    DOCTEST_INFO("text \"" << std::string(c.text) << "\"");
    const auto ids = t->encode(c.text, kalm::text::EncodeOptions{false, std::nullopt}).ids;
    DOCTEST_CHECK(ids == c.ids);
    DOCTEST_CHECK(t->decode(ids, false) == c.decoded);
  }
}

const char* kFullwidth = "\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\x91\xEF\xBC\x92";  // ＡＢ１２

}  // namespace

DOCTEST_TEST_CASE("Strip + Lowercase, Metaspace(prepend first) + Digits, Metaspace decoder") {
  // "first" prepends only to a piece that starts the original text: after Strip has
  // removed leading spaces it no longer does.
  check(toy(R"({"type": "Sequence", "normalizers": [{"type": "Strip", "strip_left": true, "strip_right": true}, {"type": "Lowercase"}]})",
            R"({"type": "Sequence", "pretokenizers": [{"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true}, {"type": "Digits", "individual_digits": false}]})",
            R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true})"),
        {{"  AB 12 ab.  ", {6, 1, 8, 1, 6, 9}, "ab 12 ab."},
         {"ab  ab.12", {1, 6, 1, 1, 6, 9, 8}, "ab  ab.12"},
         {"a12b", {7, 8, 3}, "a12b"},
         {"a.b", {7, 9, 3}, "a.b"},
         {kFullwidth, {1, 0, 0, 0, 0}, "<unk><unk><unk><unk>"},
         {"", {}, ""}});
}

DOCTEST_TEST_CASE("Metaspace(prepend always, no split)") {
  check(toy("null", R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": false})",
            R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true})"),
        {{"  AB 12 ab.  ", {1, 1, 0, 0, 1, 8, 1, 6, 9, 1, 1}, " <unk><unk> 12 ab.  "},
         {"ab ab", {1, 6, 1, 6}, "ab ab"},
         {"a12b", {7, 8, 3}, "a12b"}});
}

DOCTEST_TEST_CASE("Whitespace pre-tokenizer, no decoder (tokens joined by spaces)") {
  check(toy("null", R"({"type": "Whitespace"})", "null"),
        {{"  AB 12 ab.  ", {0, 0, 8, 6, 9}, "<unk> <unk> 12 ab ."},
         {"ab  ab.12", {6, 6, 9, 8}, "ab ab . 12"},
         {"a12b", {2, 8, 3}, "a 12 b"},
         {"a.b", {2, 9, 3}, "a . b"}});
}

DOCTEST_TEST_CASE("Prepend normalizer, WhitespaceSplit, Strip decoder") {
  check(toy(R"({"type": "Prepend", "prepend": "\u2581"})", R"({"type": "WhitespaceSplit"})",
            R"({"type": "Sequence", "decoders": [{"type": "Strip", "content": "\u2581", "start": 1, "stop": 0}]})"),
        {{"  AB 12 ab.  ", {1, 0, 0, 8, 6, 9}, "<unk><unk>12ab."},
         {"ab  ab.12", {1, 6, 6, 9, 8}, "abab.12"},
         {"a12b", {7, 8, 3}, "a12b"},
         {"", {}, ""}});
}

DOCTEST_TEST_CASE("Digits(individual) and NFKC + Punctuation + Fuse") {
  check(toy("null", R"({"type": "Digits", "individual_digits": true})", "null"),
        {{"  AB 12 ab.  ", {11, 11, 0, 0, 11, 4, 5, 11, 6, 9, 11, 11}, "    <unk> <unk>   1 2   ab .    "},
         {"a12b", {2, 4, 5, 3}, "a 1 2 b"}});
  check(toy(R"({"type": "NFKC"})", R"({"type": "Punctuation", "behavior": "Isolated"})", R"({"type": "Fuse"})"),
        {{"  AB 12 ab.  ", {11, 11, 0, 0, 11, 8, 11, 6, 9, 11, 11}, "  <unk><unk> 12 ab.  "},
         {"a.b", {2, 9, 3}, "a.b"},
         {kFullwidth, {0, 0, 8}, "<unk><unk>12"}});
}
