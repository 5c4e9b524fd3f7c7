#pragma once
// Shared by the libFuzzer targets in tests/fuzz/ (README.md there).
//
// What counts as a finding: anything but a kalm::Error thrown for bad input.
// A crash, a sanitizer report, a hang, memory over -rss_limit_mb, any other
// exception (std::bad_alloc, std::out_of_range, ...: it escapes the target and
// libFuzzer reports the abort), and kalm::InternalError, which kalm throws only
// for a violated internal invariant (error.h: "a bug in kalm, not in the user's
// input"). Checks of the targets' own (a record read and written must read back
// the same) also abort through KALM_FUZZ_CHECK.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kalm/error.h"

namespace kalm_fuzz {

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "kalm fuzz finding: %s\n", what.c_str());
  std::abort();
}

// Runs `f`; a kalm::Error other than InternalError is the expected outcome of
// bad input and is swallowed. Returns whether `f` finished without one.
template <class F>
bool expect_kalm_errors(F&& f) {
  try {
    f();
    return true;
  } catch (const kalm::InternalError& e) {
    finding(std::string("kalm::InternalError: ") + e.what());
  } catch (const kalm::Error&) {
    return false;
  }
}

// Splits the fuzzer's bytes into parts at kSeparator (two bytes that valid JSON
// never holds raw: NUL, 0x01). Targets that read several files take one per part.
inline constexpr std::string_view kSeparator("\x00\x01", 2);

inline std::vector<std::string_view> split_parts(const std::uint8_t* data, std::size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  std::size_t begin = 0;
  while (true) {
    std::size_t at = all.find(kSeparator, begin);
    if (at == std::string_view::npos) {
      parts.push_back(all.substr(begin));
      return parts;
    }
    parts.push_back(all.substr(begin, at - begin));
    begin = at + kSeparator.size();
  }
}

}  // namespace kalm_fuzz

#define KALM_FUZZ_CHECK(cond, what)                                                       \
  do {                                                                                    \
    if (!(cond)) ::kalm_fuzz::finding(std::string("check failed: " #cond ": ") + (what)); \
  } while (0)
