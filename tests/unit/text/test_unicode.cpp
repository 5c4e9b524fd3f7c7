#include <doctest/doctest.h>

#include "kalm/error.h"
#include "kalm/text/unicode.h"

using namespace kalm::text;

DOCTEST_TEST_CASE("find_invalid_utf8 finds the first bad byte") {
  DOCTEST_CHECK(!find_invalid_utf8(""));
  DOCTEST_CHECK(!find_invalid_utf8("plain ascii text that is longer than eight bytes"));
  DOCTEST_CHECK(!find_invalid_utf8("\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF"));
  DOCTEST_CHECK(find_invalid_utf8("abcdefghij\xFF") == std::size_t{10});
  DOCTEST_CHECK(find_invalid_utf8("a\xC3") == std::size_t{1});             // truncated
  DOCTEST_CHECK(find_invalid_utf8("\xC0\xAF") == std::size_t{0});          // overlong
  DOCTEST_CHECK(find_invalid_utf8("\xE0\x80\xAF") == std::size_t{0});      // overlong
  DOCTEST_CHECK(find_invalid_utf8("ab\xED\xA0\x80") == std::size_t{2});    // surrogate
  DOCTEST_CHECK(find_invalid_utf8("\xF4\x90\x80\x80") == std::size_t{0});  // > U+10FFFF
  DOCTEST_CHECK(find_invalid_utf8("\x80") == std::size_t{0});              // stray continuation
  DOCTEST_CHECK_THROWS_AS(check_utf8("x\xFF", "field"), kalm::FormatError);
}

DOCTEST_TEST_CASE("utf8_lossy replaces maximal invalid subparts like from_utf8_lossy") {
  DOCTEST_CHECK(utf8_lossy("Hello \xF0\x90\x80World") == "Hello \xEF\xBF\xBDWorld");
  DOCTEST_CHECK(utf8_lossy("\xFF\xFE") == "\xEF\xBF\xBD\xEF\xBF\xBD");
  DOCTEST_CHECK(utf8_lossy("a\xE2\x82") == "a\xEF\xBF\xBD");
  DOCTEST_CHECK(utf8_lossy("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  DOCTEST_CHECK(utf8_lossy("ok \xC3\xA9") == "ok \xC3\xA9");
}

DOCTEST_TEST_CASE("normalize: NFC, NFD, NFKC, NFKD") {
  DOCTEST_CHECK(normalize("e\xCC\x81", NormalForm::kNfc) == "\xC3\xA9");
  DOCTEST_CHECK(normalize("\xC3\xA9", NormalForm::kNfd) == "e\xCC\x81");
  DOCTEST_CHECK(normalize("\xEF\xAC\x81", NormalForm::kNfkc) == "fi");    // ligature
  DOCTEST_CHECK(normalize("\xEF\xAC\x81", NormalForm::kNfc) == "\xEF\xAC\x81");
  DOCTEST_CHECK(normalize("\xEF\xBC\xA1", NormalForm::kNfkd) == "A");     // fullwidth A
  DOCTEST_CHECK(normalize("plain", NormalForm::kNfkc) == "plain");
  DOCTEST_CHECK(normalize(std::string("a\0b", 3), NormalForm::kNfc) == std::string("a\0b", 3));
  DOCTEST_CHECK_THROWS_AS(normalize("\xFF", NormalForm::kNfc), kalm::FormatError);
}

DOCTEST_TEST_CASE("character classes follow Rust's char methods") {
  DOCTEST_CHECK(is_white_space(0x85));
  DOCTEST_CHECK(is_white_space(0x3000));
  DOCTEST_CHECK(!is_white_space(0x200B));
  DOCTEST_CHECK(is_alphanumeric_word(U'\u00E9'));
  DOCTEST_CHECK(is_alphanumeric_word(0x0301));  // combining mark
  DOCTEST_CHECK(!is_alphanumeric_word(U'-'));
  DOCTEST_CHECK(is_numeric(0x00BD));            // 1/2 (No)
  DOCTEST_CHECK(is_punctuation(U'\u00BF'));
  std::string s;
  append_lowercase(s, 0x130);
  append_lowercase(s, U'A');
  append_lowercase(s, 0x0416);
  DOCTEST_CHECK(s == "i\xCC\x87" "a\xD0\xB6");
}
