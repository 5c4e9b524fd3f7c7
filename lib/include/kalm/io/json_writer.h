#pragma once
// Writing records as JSON Lines: one object per line, "\n"-terminated, UTF-8.
//
// The append_* functions serialise into a caller's string (no I/O); JsonlWriter
// puts lines into an OutputStream (plain or .zst, atomic: nothing appears at the
// path unless finish() succeeds).
//
// Strings are escaped as JSON requires and no more: `"` and `\` and the control
// characters U+0000..U+001F (as \b \f \n \r \t or \u00XX); everything else, valid
// UTF-8 included, is copied as is. Invalid UTF-8 is refused (FormatError), never
// repaired. Numbers are written in the shortest form that reads back to the same
// double; NaN and infinities are refused (FormatError: JSON has no spelling for
// them).
//
// Thread safety: none; one thread per writer. The free functions are reentrant.

#include <cstddef>
#include <string>
#include <string_view>

#include "kalm/io/records.h"
#include "kalm/io/zstd_stream.h"

namespace kalm::io {

// Appends `"<escaped s>"`. Throws FormatError if `s` is not valid UTF-8.
void append_json_string(std::string& out, std::string_view s);
// Appends the shortest round-trip form of `v` (`1`, `0.25`, `1e-07`).
// Throws FormatError for NaN / infinity.
void append_json_number(std::string& out, double v);

// Appends the record as one JSON object, without a newline. Known fields in
// canonical order (query, pos, neg, pos_scores, neg_scores, task, instruction,
// type; id, text / input_ids), then `extra` verbatim in its order. `neg` is always
// written, optional fields only when present, score lists only when non-empty.
// Throws FormatError for invalid UTF-8, non-finite scores, or score lists whose
// length does not match pos/neg.
void append_json(std::string& out, const TrainingGroup& record);
void append_json(std::string& out, const CorpusRecord& record);
// `{ "k": raw, ... }` from raw fields.
void append_json(std::string& out, const RawFields& record);

// Appends `raw_record` with `"_reject": {"stage": ..., "reason": ..., extra...}` as
// its last field ("input record unchanged plus _reject"). `raw_record` is a JSON
// object as read (e.g. JsonlReader::line()), possibly with surrounding whitespace;
// `{}` becomes `{"_reject":{...}}`. Anything that is not an object text (a line
// that failed to parse) is kept as a string instead: `{"_raw": "<line>",
// "_reject": ...}`, so no input is ever lost. If that line is not even valid UTF-8,
// which JSON cannot hold, it goes under "_raw_latin1" instead, every byte as the
// code point of the same value: lossless, and the field name says how to undo it.
void append_reject(std::string& out, std::string_view raw_record, std::string_view stage,
                   std::string_view reason, const RawFields& extra = {});

class JsonlWriter {
 public:
  // Opens the output as OutputStream does (".zst" compresses; "-" is stdout).
  explicit JsonlWriter(std::string path, OutputOptions options = {});
  // Without finish() nothing is left at the path.
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;

  void write(const TrainingGroup& record);
  void write(const CorpusRecord& record);
  void write(const RawFields& record);
  // Writes `json_object` (one complete JSON object, no newline) as a line, as is.
  void write_line(std::string_view json_object);
  void write_reject(std::string_view raw_record, std::string_view stage,
                    std::string_view reason, const RawFields& extra = {});
  // Completes and publishes the file (see OutputStream::finish). Idempotent.
  void finish();

  std::size_t records() const { return records_; }
  const std::string& path() const { return out_.path(); }

 private:
  void emit();

  OutputStream out_;
  std::string line_;  // reused for every record
  std::size_t records_ = 0;
};

}  // namespace kalm::io
