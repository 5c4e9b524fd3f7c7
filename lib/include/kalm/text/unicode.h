#pragma once
// UTF-8 and Unicode helpers shared by the tokenizers (utf8proc underneath).
//
// Thread safety: all functions are pure and may be called concurrently.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kalm::text {

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and
// code points above U+10FFFF are invalid), or nullopt when `s` is valid.
std::optional<std::size_t> find_invalid_utf8(std::string_view s);

// Throws kalm::FormatError("<what>: invalid UTF-8 at byte N") when `s` is invalid.
void check_utf8(std::string_view s, const std::string& what);

// Unicode normalisation of valid UTF-8. Throws FormatError on invalid input.
std::string normalize(std::string_view s, NormalForm form);

// Decodes bytes as UTF-8, replacing each maximal invalid subsequence with U+FFFD
// (the WHATWG / Rust String::from_utf8_lossy rule, so decode() matches HF).
std::string utf8_lossy(std::string_view bytes);

// Decodes the code point starting at s[i] of *valid* UTF-8 and advances i.
inline char32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  if (b0 < 0xE0) {
    char32_t c = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    i += 2;
    return c;
  }
  if (b0 < 0xF0) {
    char32_t c = ((b0 & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                 (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
    i += 3;
    return c;
  }
  char32_t c = ((b0 & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
               ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) |
               (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
  i += 4;
  return c;
}

// Length in bytes of the UTF-8 sequence that starts with byte b0 (1 for stray bytes).
inline std::size_t utf8_length(unsigned char b0) {
  return b0 < 0x80 ? 1 : b0 < 0xC0 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
}

void append_utf8(std::string& out, char32_t c);

// Character classes with the meaning Rust's `char` methods give them, which is what
// HF tokenizers uses outside its regexes.
bool is_white_space(char32_t c);   // char::is_whitespace (Unicode White_Space)
bool is_alphanumeric_word(char32_t c);  // regex `\w`: Alphabetic, M, Nd, Pc, Join_Control
bool is_numeric(char32_t c);       // char::is_numeric: Nd, Nl, No
bool is_punctuation(char32_t c);   // ASCII punctuation or a P* category
bool is_mark_nonspacing(char32_t c);  // Mn
// char::to_lowercase, appended as UTF-8 (full mapping: U+0130 -> "i\u0307").
void append_lowercase(std::string& out, char32_t c);

}  // namespace kalm::text
