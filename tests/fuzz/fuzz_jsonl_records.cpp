// libFuzzer target: JSON Lines records (kalm/io/jsonl.h) read from memory.
//
// The input is a whole record file (plain or zstd: InputStream detects the
// magic bytes). It is read in one of five ways, chosen by its size modulo 5:
// as TrainingGroup, CorpusRecord or RawFields JSON Lines, as text-format
// CorpusRecords, or as RawFields with a 32-byte line limit (the over-long-line
// path). One way per input, not all five: every JsonlReader allocates and
// clears a 1 MiB line buffer, which under ASan is most of an execution's time,
// and libFuzzer's mutations change the size all the time anyway. Like
// kalm-synth-filter, a pass keeps calling next() after a content error and
// writes the offending line as a reject; it stops at the end of the input or
// when the same error comes back for the same line (an error of the stream
// itself is final: every later next() repeats it).
//
// Checks beyond "no crash": what a tool writes from what it read must read
// back. Every accepted record, serialised with append_json(), reads back as a
// record that serialises to the same bytes; every reject line that
// append_reject() builds reads back as a JSON object with a "_reject" field.
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/jsonl.h"
#include "kalm/io/records.h"

namespace {

using kalm::io::InputFormat;
using kalm::io::InputStream;
using kalm::io::JsonlReader;
using kalm::io::ReaderOptions;

// Reads `lines` (what the writer produced) back as records of type R; nothing
// may fail. Returns their serialisations.
template <class R>
std::vector<std::string> reread(const std::string& lines, std::size_t expected) {
  std::vector<std::string> out;
  try {
    JsonlReader reader(InputStream::from_memory(lines, "rewritten.jsonl"), ReaderOptions{});
    R record;
    while (reader.next(record)) {
      std::string s;
      kalm::io::append_json(s, record);
      out.push_back(std::move(s));
    }
  } catch (const kalm::Error& e) {
    kalm_fuzz::finding(std::string("a record kalm wrote does not read back: ") + e.what() + "\n" + lines);
  }
  KALM_FUZZ_CHECK(out.size() == expected, "record count changed on rereading");
  return out;
}

template <class R>
void read_pass(std::string_view bytes, ReaderOptions options) {
  std::vector<std::string> written;  // append_json of each accepted record
  std::string rejects;               // append_reject of each failed line, one per line
  std::size_t n_rejects = 0;
  kalm_fuzz::expect_kalm_errors([&] {
    JsonlReader reader(InputStream::from_memory(std::string(bytes), "fuzz.jsonl"), options);
    std::string last_error;
    std::size_t last_line = static_cast<std::size_t>(-1);
    R record;
    for (;;) {
      try {
        if (!reader.next(record)) break;
      } catch (const kalm::InternalError&) {
        throw;
      } catch (const kalm::UsageError&) {
        throw;  // the wrong format for this record type: ends the pass
      } catch (const kalm::Error& e) {
        // As a tool does: the offending line goes to the rejects, reading goes on.
        try {
          kalm::io::append_reject(rejects, reader.line(), "fuzz", e.what());
        } catch (const kalm::Error& w) {
          kalm_fuzz::finding(std::string("append_reject refused a reader error: ") + w.what());
        }
        rejects.push_back('\n');
        ++n_rejects;
        if (e.what() == last_error && reader.line_number() == last_line) break;
        last_error = e.what();
        last_line = reader.line_number();
        continue;
      }
      std::string s;
      try {
        kalm::io::append_json(s, record);
      } catch (const kalm::Error& e) {
        kalm_fuzz::finding(std::string("append_json refused a record the reader accepted: ") + e.what());
      }
      written.push_back(std::move(s));
    }
  });

  if (!written.empty()) {
    std::string lines;
    for (const std::string& s : written) lines += s + "\n";
    std::vector<std::string> again = reread<R>(lines, written.size());
    for (std::size_t i = 0; i < written.size(); ++i)
      KALM_FUZZ_CHECK(again[i] == written[i], "record changed on rereading:\n" + written[i] + "\n" + again[i]);
  }
  if (n_rejects > 0) {
    std::vector<std::string> raw = reread<kalm::io::RawFields>(rejects, n_rejects);
    for (const std::string& r : raw) KALM_FUZZ_CHECK(r.find("\"_reject\"") != std::string::npos, r);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ReaderOptions options;
  switch (size % 5) {
    case 0: read_pass<kalm::io::TrainingGroup>(bytes, options); break;
    case 1: read_pass<kalm::io::CorpusRecord>(bytes, options); break;
    case 2: read_pass<kalm::io::RawFields>(bytes, options); break;
    case 3:
      options.format = InputFormat::kText;
      read_pass<kalm::io::CorpusRecord>(bytes, options);
      break;
    default:
      options.max_line_bytes = 32;
      read_pass<kalm::io::RawFields>(bytes, options);
      break;
  }
  return 0;
}
