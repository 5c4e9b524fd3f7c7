#pragma once
// Streaming readers for record files (JSON Lines or plain text, plain or zstd).
//
// LineReader  splits an InputStream into lines. Memory is bounded by the longest
//             line, not by the file: one buffer that grows only to fit it.
// JsonlReader parses each line as one JSON object (simdjson on-demand) into a typed
//             record (records.h) or into raw fields.
//
// Line rules (the same for every kalm tool):
// - Lines end in "\n"; a "\r" before it is dropped (CRLF files read as LF files).
// - A final line without "\n" is a line. In JSONL, if that line is not a complete
//   JSON value it is reported as a truncated last line.
// - A UTF-8 byte order mark at the start of the input is skipped.
// - Lines are numbered from 1, counting every line (blank ones too), so
//   `file:line` in a message is what `sed -n 'LINEp'` shows.
// - Blank and whitespace-only lines (space, tab) are skipped in JSONL, as jq does.
//   In text format every line is a record, an empty line an empty text, so that
//   output row i is input line i.
// - A line longer than ReaderOptions::max_line_bytes (default 256 MiB) is an error
//   that says so; anything up to the limit is parsed. The limit exists because
//   simdjson needs about 5 bytes of working memory per byte of the longest line.
//
// Errors (all name `file:line`, "<stdin>" for stdin): FormatError for invalid JSON,
// invalid UTF-8, a record that is not an object, a field of the wrong type, a
// missing required field, a duplicate known field, a truncated last line, an
// over-long line; plus the InputStream errors (zstd, I/O). Nothing is skipped
// silently: every line is either a record, a blank line, or an exception.
// After an error in a record's content (JSON, UTF-8, schema) the reader stays
// usable: line() is the offending line (for a rejects stream) and next() goes on
// with the following line. Errors of the stream itself (zstd, I/O, an over-long
// line) are final: every later next() throws the same error.
//
// Thread safety: none; one thread per reader.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "kalm/io/records.h"
#include "kalm/io/zstd_stream.h"

namespace kalm::io {

// Bytes past the end of every line handed out by LineReader that may be read (not
// written): simdjson's SIMDJSON_PADDING, so lines parse in place without copies.
inline constexpr std::size_t kLinePadding = 64;

enum class InputFormat {
  kJsonl,  // one JSON object per line
  kText,   // one text per line (CorpusRecord only; `--input-format text`)
};

struct ReaderOptions {
  InputFormat format = InputFormat::kJsonl;
  // Longest accepted line in bytes, without its "\r\n".
  std::size_t max_line_bytes = std::size_t{256} << 20;
};

class LineReader {
 public:
  // Opens `path` ("-" or "" = stdin). Throws IoError / FormatError as InputStream.
  explicit LineReader(const std::string& path, std::size_t max_line_bytes = ReaderOptions{}.max_line_bytes);
  explicit LineReader(std::unique_ptr<InputStream> input,
                      std::size_t max_line_bytes = ReaderOptions{}.max_line_bytes);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Sets `line` to the next line without its "\n" or "\r\n" and returns true, or
  // returns false at the end of the input. The view stays valid until the next
  // call; kLinePadding bytes after it are readable. Throws FormatError naming
  // `file:line` for a line over the limit (and again on every later call), plus
  // the InputStream errors.
  bool next(std::string_view& line);
  // 1-based number of the line last returned (0 before the first).
  std::size_t line_number() const { return line_number_; }
  // Whether the line last returned had no "\n" (the end of the input came first).
  bool last_line_unterminated() const { return unterminated_; }
  const std::string& name() const { return input_->name(); }
  const InputStream& input() const { return *input_; }

 private:
  bool fill();  // reads more input; false at the end
  void grow(std::size_t min_capacity);
  [[noreturn]] void too_long(std::size_t line_number);

  std::unique_ptr<InputStream> input_;
  std::size_t max_line_bytes_;
  std::unique_ptr<char[]> buf_;  // capacity_ + kLinePadding bytes
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0, end_ = 0;  // unread data
  std::size_t scanned_ = 0;          // [begin_, scanned_) holds no '\n'
  std::size_t line_number_ = 0;
  bool eof_ = false;
  bool unterminated_ = false;
  bool at_start_ = true;
  std::string failure_;  // set by an over-long line; later calls rethrow
};

class JsonlReader {
 public:
  explicit JsonlReader(const std::string& path, ReaderOptions options = {});
  explicit JsonlReader(std::unique_ptr<InputStream> input, ReaderOptions options = {});
  ~JsonlReader();
  JsonlReader(const JsonlReader&) = delete;
  JsonlReader& operator=(const JsonlReader&) = delete;

  // Each next() fills `record` from the next non-blank line and returns true, or
  // returns false at the end of the input (an empty input has zero records).
  // Throws FormatError naming `file:line` for the problems listed at the top.
  //
  // TrainingGroup: query and a non-empty pos are required; neg defaults to empty;
  // pos_scores/neg_scores, when present, have one number per pos/neg; type is one
  // of the TaskType names. An optional field that is null counts as absent.
  // Text format: UsageError (training groups are JSON only).
  bool next(TrainingGroup& record);
  // CorpusRecord: "text" (string) or "input_ids" (array of non-negative integers),
  // exactly one of them; "id" a string or an integer, optional. Text format: the
  // line is the text (checked to be valid UTF-8), no id.
  bool next(CorpusRecord& record);
  // Any JSON object, every field raw (validated). Text format: UsageError.
  bool next(RawFields& record);

  // The raw text of the last record's line, or of the line that just failed to
  // parse (without "\r\n"); valid until the next call. What
  // JsonlWriter::write_reject wants. Empty after an error of the stream itself
  // (an over-long line, zstd, I/O): there is no line to show then.
  std::string_view line() const { return line_; }
  std::size_t line_number() const { return lines_.line_number(); }
  const std::string& name() const { return lines_.name(); }
  // Records returned so far.
  std::size_t records() const { return records_; }

 private:
  class Parser;
  bool next_line();

  LineReader lines_;
  ReaderOptions options_;
  std::unique_ptr<Parser> parser_;
  std::string_view line_;
  std::size_t records_ = 0;
};

}  // namespace kalm::io
