#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include <new>

#include <pcre2.h>

#include "kalm/error.h"
#include "kalm/text/unicode.h"

namespace kalm::text::detail {

namespace {

// Oniguruma's \s is the White_Space property; PCRE2 10.42's UCP \s leaves out
// U+0085 (NEL). Spelling the class out removes the difference.
constexpr const char* kWhiteSpaceClass =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return "error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match state: match data, a match context and a JIT stack large
// enough for long runs of spaces (the `\s+(?!\S)` alternative backtracks per char).
struct ThreadState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ThreadState() {
    data = pcre2_match_data_create(8, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadState() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

}  // namespace

std::string translate_onig_pattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  int class_depth = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        if (class_depth > 0) {
          out += kWhiteSpaceClass;
        } else {
          out += '[';
          out += kWhiteSpaceClass;
          out += ']';
        }
      } else if (e == 'S' && class_depth == 0) {
        out += "[^";
        out += kWhiteSpaceClass;
        out += ']';
      } else if (e == 'h') {  // Oniguruma: hexadecimal digit (PCRE2: horizontal space)
        out += class_depth > 0 ? "0-9a-fA-F" : "[0-9a-fA-F]";
      } else if (e == 'H' && class_depth == 0) {
        out += "[^0-9a-fA-F]";
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (c == '[') {
      // "[[:alpha:]]" style POSIX classes are handled by PCRE2 as they are.
      if (class_depth > 0 && i + 1 < p.size() && p[i + 1] == ':') {
        const auto close = p.find(":]", i + 2);
        if (close != std::string_view::npos) {
          out.append(p.substr(i, close + 2 - i));
          i = close + 1;
          continue;
        }
      }
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < p.size() && p[i + 1] == '^') {
        out += '^';
        ++i;
      }
      if (i + 1 < p.size() && p[i + 1] == ']') {
        out += "\\]";
        ++i;
      }
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

Regex::Regex(std::string_view onig_pattern, const std::string& context)
    : pattern_(onig_pattern) {
  const std::string translated = translate_onig_pattern(onig_pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  // MULTILINE: Oniguruma's default (Ruby) syntax makes ^ and $ line anchors.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()),
                                   translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset,
                                   nullptr);
  if (!code) {
    throw ModelError(context + ": bad regex /" + std::string(onig_pattern) + "/: " +
                     pcre2_message(error) + " at offset " + std::to_string(offset));
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<Span>& out) const {
  out.clear();
  auto* code = static_cast<pcre2_code*>(code_);
  ThreadState& ts = thread_state();
  if (!ts.data || !ts.context) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t search_from = 0;
  bool have_last = false;
  std::size_t last_end = 0;
  while (search_from <= text.size()) {
    int rc;
    if (jit_) {
      rc = pcre2_jit_match(code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK, ts.data,
                           ts.context);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK, ts.data,
                         nullptr);
      }
    } else {
      rc = pcre2_match(code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK, ts.data,
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      throw FormatError("regex /" + pattern_ + "/ failed on a text of " +
                        std::to_string(text.size()) + " bytes: " + pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ts.data);
    const std::size_t s = ov[0], e = ov[1];
    // Oniguruma's find_iter: an empty match right where the previous match ended is
    // skipped by stepping one character forward.
    if (s == e && have_last && last_end == e) {
      if (search_from >= text.size()) break;
      search_from += utf8_length(static_cast<unsigned char>(text[search_from]));
      continue;
    }
    out.emplace_back(s, e);
    have_last = true;
    last_end = e;
    search_from = e;
  }
}

}  // namespace kalm::text::detail
