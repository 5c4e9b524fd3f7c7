#pragma once
// Oniguruma-compatible regular expressions on PCRE2 (internal to kalm::text).
//
// HF tokenizers compiles tokenizer.json patterns with Oniguruma; this wrapper
// compiles them with PCRE2 (UTF + UCP, JIT) after rewriting the few constructs
// whose meaning differs (see translate_onig_pattern), and iterates matches with
// Oniguruma's find_iter rule for empty matches.
//
// Thread safety: a compiled Regex is immutable; find_all() uses thread-local match
// data and JIT stacks, so one Regex may be used from many threads at once.

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kalm::text::detail {

using Span = std::pair<std::size_t, std::size_t>;  // [begin, end) byte offsets

// Rewrites an Oniguruma pattern into an equivalent PCRE2 pattern.
std::string translate_onig_pattern(std::string_view pattern);

class Regex {
 public:
  // Throws ModelError("<context>: bad regex ...") when the pattern does not compile.
  Regex(std::string_view onig_pattern, const std::string& context);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Replaces `out` with the non-overlapping matches in `text` (valid UTF-8), left to
  // right. Throws FormatError if PCRE2 gives up (resource limits).
  void find_all(std::string_view text, std::vector<Span>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace kalm::text::detail
