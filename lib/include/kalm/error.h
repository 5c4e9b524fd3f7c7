#pragma once
// The one error path of kalm (conventions.md "Errors").
//
// Library code throws one of these with the user's context already in the
// message (file, JSONL line, tensor name, field). Each tool's main catches once
// (kalm::cli::Tool::run) and prints `kalm-<tool>: error: <what>`.
// Exit codes: UsageError -> 2, every other kalm::Error -> 1.
// KALM_ASSERT is for internal invariants only, never for user input.

#include <stdexcept>
#include <string>

namespace kalm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad flags or flag combinations (exit 2).
class UsageError : public Error {
 public:
  using Error::Error;
};

// A file cannot be opened, read, written or renamed.
class IoError : public Error {
 public:
  using Error::Error;
};

// Input data is malformed: JSON, UTF-8, zstd frames, safetensors headers, schemas.
class FormatError : public Error {
 public:
  using Error::Error;
};

// A model directory or checkpoint is unusable (missing file, wrong shape, ...).
class ModelError : public Error {
 public:
  using Error::Error;
};

// A violated internal invariant: a bug in kalm, not in the user's input.
class InternalError : public Error {
 public:
  using Error::Error;
};

// "file:line" / "file" helpers so every message names its place the same way.
std::string where(const std::string& file, std::size_t line);
std::string display_name(const std::string& path);  // "-" -> "<stdin>"

}  // namespace kalm

#define KALM_ASSERT(cond, msg)                                                   \
  do {                                                                           \
    if (!(cond))                                                                 \
      throw ::kalm::InternalError(std::string("internal error: ") + (msg) +    \
                                  " (" #cond ") at " __FILE__ ":" +              \
                                  std::to_string(__LINE__));                     \
  } while (0)
