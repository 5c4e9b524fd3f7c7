// JsonlReader: line handling, every malformed input, and the large cases
// (10^6 records, a line over 100 MB).

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/jsonl.h"
#include "test_jsonl_util.h"

using kalm_test::error_of;
using kalm_test::TempDir;
using kalm_test::write_file;
using kalm_test::zstd_frame;

namespace {

constexpr const char* kGood = R"({"query":"q","pos":["p"]})";

// The FormatError message for reading every training group of `text`, stored as
// file `name` in `dir` (zstd-compressed when `compress`).
std::string group_error(const TempDir& dir, const std::string& text, bool compress = false,
                        const std::string& name = "data.jsonl") {
  std::string path = dir.file(name);
  write_file(path, compress ? zstd_frame(text) : text);
  return error_of<kalm::FormatError>([&] {
    kalm::io::JsonlReader reader(path);
    kalm::io::TrainingGroup g;
    while (reader.next(g)) {
    }
  });
}

std::size_t count_groups(const std::string& text, std::vector<std::size_t>* lines = nullptr) {
  kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(text, "mem"));
  kalm::io::TrainingGroup g;
  std::size_t n = 0;
  while (reader.next(g)) {
    ++n;
    if (lines) lines->push_back(reader.line_number());
  }
  return n;
}

}  // namespace

DOCTEST_TEST_CASE("JsonlReader: empty input is zero records, not an error") {
  TempDir dir;
  for (std::string text : {"", "\n", "\n  \n\t\r\n"}) {
    write_file(dir.file("empty.jsonl"), text);
    kalm::io::JsonlReader reader(dir.file("empty.jsonl"));
    kalm::io::TrainingGroup g;
    DOCTEST_CHECK_FALSE(reader.next(g));
    DOCTEST_CHECK(reader.records() == 0);
  }
  write_file(dir.file("empty.jsonl.zst"), zstd_frame(""));
  kalm::io::JsonlReader reader(dir.file("empty.jsonl.zst"));
  kalm::io::CorpusRecord c;
  DOCTEST_CHECK_FALSE(reader.next(c));
}

DOCTEST_TEST_CASE("JsonlReader skips blank lines but counts them, and accepts CRLF") {
  std::string text = std::string("\n") + kGood + "\r\n   \r\n\t\n" + kGood + "\n\n" + kGood;
  std::vector<std::size_t> lines;
  DOCTEST_CHECK(count_groups(text, &lines) == 3);
  DOCTEST_CHECK(lines == std::vector<std::size_t>{2, 5, 7});
}

DOCTEST_TEST_CASE("JsonlReader: a complete last line without newline is a record") {
  DOCTEST_CHECK(count_groups(std::string(kGood) + "\n" + kGood) == 2);
  DOCTEST_CHECK(count_groups(kGood) == 1);
  DOCTEST_CHECK(count_groups(std::string(kGood) + "  ") == 1);
}

DOCTEST_TEST_CASE("JsonlReader: a truncated last line is an error naming file:line") {
  TempDir dir;
  std::string text = std::string(kGood) + "\n" + kGood + "\n" + R"({"query":"q","pos":["p)";
  std::string msg = group_error(dir, text);
  DOCTEST_CHECK(msg.rfind(dir.file("data.jsonl") + ":3: truncated last line", 0) == 0);
  // The same inside zstd.
  msg = group_error(dir, text, true, "data.jsonl.zst");
  DOCTEST_CHECK(msg.rfind(dir.file("data.jsonl.zst") + ":3: truncated last line", 0) == 0);
  // Cut right after a value: still not a complete object.
  msg = group_error(dir, std::string(kGood) + "\n" + R"({"query":"q","pos":["p"])");
  DOCTEST_CHECK(msg.rfind(dir.file("data.jsonl") + ":2: truncated last line", 0) == 0);
}

DOCTEST_TEST_CASE("JsonlReader: invalid UTF-8 is an error naming file:line") {
  TempDir dir;
  std::string f = dir.file("data.jsonl");
  std::string head = std::string(kGood) + "\n\n";
  DOCTEST_CHECK(group_error(dir, head + "{\"query\":\"caf\xC3\",\"pos\":[\"p\"]}\n") ==
                f + ":3: invalid UTF-8");
  DOCTEST_CHECK(group_error(dir, head + "{\"query\":\"q\",\"pos\":[\"\xFF\"]}\n") ==
                f + ":3: invalid UTF-8");
  // In an unknown field and in a key.
  DOCTEST_CHECK(group_error(dir, head + "{\"query\":\"q\",\"pos\":[\"p\"],\"x\":\"\xED\xA0\x80\"}\n") ==
                f + ":3: invalid UTF-8");
  DOCTEST_CHECK(group_error(dir, head + "{\"\xC0\xAF\":1,\"query\":\"q\",\"pos\":[\"p\"]}\n") ==
                f + ":3: invalid UTF-8");
  // Valid multi-byte text passes.
  DOCTEST_CHECK(count_groups("{\"query\":\"caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80\",\"pos\":[\"p\"]}") == 1);
}

DOCTEST_TEST_CASE("JsonlReader: invalid JSON is an error naming file:line") {
  TempDir dir;
  std::string f = dir.file("data.jsonl");
  const char* bad[] = {
      R"({"query":"q" "pos":["p"]})",                 // missing comma
      R"({"query":"q","pos":["p"],})",                // trailing comma
      R"({"query":"q","pos":["p" "p2"]})",            // missing comma in array
      R"({"query":"q","pos":["p"]} {"a":1})",         // two values on a line
      R"({"query":"q","pos":["p"]}})",                // extra brace
      R"({"query":"q","pos":["p"],"x":tru})",         // bad literal, unknown field
      R"({"query":"q","pos":["p"],"x":[1,2,]})",      // bad array, unknown field
      R"({"query":"q","pos":["p"],"x":{"a":}})",      // bad object, unknown field
      R"({"query":"q","pos":["p"],"x":01})",          // bad number, unknown field
      R"({"query":"q","pos":["p"],"x":"\x"})",        // bad escape, unknown field
      R"({"query":"\q","pos":["p"]})",                // bad escape, known field
      R"({"query":"q","pos":["p"],"task":nul})",      // bad null, optional field
      R"({"query":"q","pos":["p"],"pos_scores":[1.2.3]})",  // bad number
      "{\"query\":\"a\tb\",\"pos\":[\"p\"]}",         // unescaped control character
      R"({query:"q","pos":["p"]})",                   // unquoted key
      R"({"query":'q',"pos":["p"]})",                 // single quotes
  };
  for (const char* line : bad) {
    DOCTEST_CAPTURE(line);
    std::string msg = group_error(dir, std::string(kGood) + "\n" + line + "\n" + kGood + "\n");
    DOCTEST_CHECK(msg.rfind(f + ":2: invalid JSON", 0) == 0);
  }
}

DOCTEST_TEST_CASE("JsonlReader: absurd nesting is an error, not a crash") {
  TempDir dir;
  std::string f = dir.file("data.jsonl");
  const std::size_t kDepth = 200000;
  std::string deep = std::string(kDepth, '[') + std::string(kDepth, ']');
  std::string msg = group_error(dir, std::string(kGood) + "\n{\"x\":" + deep + ",\"query\":\"q\",\"pos\":[\"p\"]}\n");
  DOCTEST_CHECK(msg.rfind(f + ":2: invalid JSON in field \"x\"", 0) == 0);
  msg = group_error(dir, "{\"query\":\"q\",\"pos\":[" + deep + "]}\n");
  DOCTEST_CHECK(msg == f + ":1: field \"pos\" must be an array of strings, but element 0 is an array");
  // Unbalanced: cut inside the nesting.
  msg = group_error(dir, "{\"x\":" + std::string(kDepth, '[') + "\n");
  DOCTEST_CHECK(msg.rfind(f + ":1: invalid JSON", 0) == 0);
}

DOCTEST_TEST_CASE("JsonlReader: a record that is not an object is an error") {
  TempDir dir;
  std::string f = dir.file("data.jsonl");
  DOCTEST_CHECK(group_error(dir, "[\"query\",\"q\"]\n") ==
                f + ":1: a record must be a JSON object, this line holds an array");
  DOCTEST_CHECK(group_error(dir, "\"text\"\n") ==
                f + ":1: a record must be a JSON object, this line holds a string");
  DOCTEST_CHECK(group_error(dir, "42\n") ==
                f + ":1: a record must be a JSON object, this line holds a number");
  DOCTEST_CHECK(group_error(dir, "null\n") ==
                f + ":1: a record must be a JSON object, this line holds null");
}

DOCTEST_TEST_CASE("JsonlReader: over-long lines are refused with a clear error") {
  std::string line = R"({"query":")" + std::string(5000, 'q') + R"(","pos":["p"]})";
  kalm::io::ReaderOptions options;
  options.max_line_bytes = 4096;
  kalm::io::JsonlReader reader(
      kalm::io::InputStream::from_memory(std::string(kGood) + "\n" + line + "\n", "big.jsonl"), options);
  kalm::io::TrainingGroup g;
  DOCTEST_CHECK(reader.next(g));
  std::string msg = error_of<kalm::FormatError>([&] { reader.next(g); });
  DOCTEST_CHECK(msg == "big.jsonl:2: line is longer than 4096 bytes (the maximum line length)");
}

DOCTEST_TEST_CASE("JsonlReader: after an over-long line that grew the buffer, line() is empty, not freed memory") {
  // The first line sits in the reader's first buffer; the second outgrows it, so
  // the reader moves to a larger one before it finds the line too long. A view
  // of the first line kept past that point would point into freed memory (the
  // sanitized copy of this test, unit_io_asan, reports it if it comes back).
  const std::size_t limit = std::size_t{3} << 20;
  std::string input = std::string(kGood) + "\n{\"query\":\"" + std::string(limit + 1000, 'q') + "\"}\n";
  for (bool from_file : {false, true}) {
    DOCTEST_CAPTURE(from_file);
    TempDir dir;
    std::unique_ptr<kalm::io::InputStream> in;
    if (from_file) {
      write_file(dir.file("long.jsonl"), input);
      in = std::make_unique<kalm::io::InputStream>(dir.file("long.jsonl"));
    } else {
      in = kalm::io::InputStream::from_memory(input, "long.jsonl");
    }
    kalm::io::ReaderOptions options;
    options.max_line_bytes = limit;
    kalm::io::JsonlReader reader(std::move(in), options);
    kalm::io::TrainingGroup g;
    DOCTEST_REQUIRE(reader.next(g));
    DOCTEST_CHECK(reader.line() == kGood);
    std::string msg = error_of<kalm::FormatError>([&] { reader.next(g); });
    std::string name = from_file ? dir.file("long.jsonl") : "long.jsonl";
    DOCTEST_CHECK(msg == name + ":2: line is longer than 3145728 bytes (the maximum line length)");
    std::string copy(reader.line());  // what kalm-synth-filter's reject path does
    DOCTEST_CHECK(copy.empty());
    DOCTEST_CHECK(error_of<kalm::FormatError>([&] { reader.next(g); }) == msg);
    DOCTEST_CHECK(reader.line().empty());
  }
}

DOCTEST_TEST_CASE("JsonlReader parses a line over 100 MB") {
  TempDir dir;
  std::string path = dir.file("huge.jsonl");
  const std::size_t kBig = (std::size_t{100} << 20) + 12345;
  {
    std::string text;
    text.reserve(kBig + 200);
    text += std::string(kGood) + "\n";
    text += R"({"query":"start)";
    text.append(kBig, 'x');
    text += R"(end","pos":["p1","p2"],"neg":["n"],"note":"after"})";
    text += "\n" + std::string(kGood) + "\n";
    write_file(path, text);
  }
  kalm::io::JsonlReader reader(path);
  kalm::io::TrainingGroup g;
  DOCTEST_REQUIRE(reader.next(g));
  DOCTEST_REQUIRE(reader.next(g));
  DOCTEST_CHECK(reader.line_number() == 2);
  DOCTEST_CHECK(g.query.size() == kBig + 8);
  DOCTEST_CHECK(g.query.compare(0, 5, "start") == 0);
  DOCTEST_CHECK(g.query.compare(g.query.size() - 3, 3, "end") == 0);
  DOCTEST_CHECK(g.query[kBig / 2] == 'x');
  DOCTEST_CHECK(g.pos == std::vector<std::string>{"p1", "p2"});
  DOCTEST_CHECK(g.neg == std::vector<std::string>{"n"});
  DOCTEST_REQUIRE(g.extra.size() == 1);
  DOCTEST_CHECK(g.extra[0].value == "\"after\"");
  DOCTEST_REQUIRE(reader.next(g));
  DOCTEST_CHECK(g.query == "q");
  DOCTEST_CHECK_FALSE(reader.next(g));
}

DOCTEST_TEST_CASE("JsonlReader streams 10^6 small records from .zst") {
  TempDir dir;
  std::string path = dir.file("million.jsonl.zst");
  const std::size_t kN = 1000000;
  {
    kalm::io::JsonlWriter writer(path, {std::nullopt, 1, 0});
    kalm::io::TrainingGroup g;
    g.pos.resize(1);
    g.neg.resize(2);
    for (std::size_t i = 0; i < kN; ++i) {
      g.query = "q" + std::to_string(i);
      g.pos[0] = "p" + std::to_string(i);
      g.neg[0] = "n" + std::to_string(i);
      g.neg[1] = "m";
      g.pos_scores = {static_cast<double>(i) / 4};
      g.task = i % 2 ? "even" : "odd";
      writer.write(g);
    }
    writer.finish();
    DOCTEST_CHECK(writer.records() == kN);
  }
  kalm::io::JsonlReader reader(path);
  kalm::io::TrainingGroup g;
  std::size_t n = 0, bad = 0;
  while (reader.next(g)) {
    // Check every record cheaply, a few in full.
    if (g.pos.size() != 1 || g.neg.size() != 2 || g.pos_scores.size() != 1 ||
        g.pos_scores[0] != static_cast<double>(n) / 4)
      ++bad;
    if (n == 0 || n == 123456 || n == kN - 1) {
      DOCTEST_CHECK(g.query == "q" + std::to_string(n));
      DOCTEST_CHECK(g.pos[0] == "p" + std::to_string(n));
      DOCTEST_CHECK(g.neg == std::vector<std::string>{"n" + std::to_string(n), "m"});
      DOCTEST_CHECK(*g.task == (n % 2 ? "even" : "odd"));
      DOCTEST_CHECK(reader.line_number() == n + 1);
    }
    ++n;
  }
  DOCTEST_CHECK(n == kN);
  DOCTEST_CHECK(bad == 0);
  DOCTEST_CHECK(reader.records() == kN);
}

DOCTEST_TEST_CASE("JsonlReader in text format: one text per line, blank lines kept") {
  kalm::io::ReaderOptions options;
  options.format = kalm::io::InputFormat::kText;
  std::string text = "first line\r\n\n{\"not\": \"parsed\"}\nlast";
  kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(zstd_frame(text), "t.txt.zst"),
                               options);
  kalm::io::CorpusRecord r;
  std::vector<std::string> texts;
  while (reader.next(r)) {
    DOCTEST_CHECK(r.has_text);
    DOCTEST_CHECK_FALSE(r.has_id);
    texts.push_back(r.text);
  }
  DOCTEST_CHECK(texts == std::vector<std::string>{"first line", "", "{\"not\": \"parsed\"}", "last"});

  kalm::io::JsonlReader bad(kalm::io::InputStream::from_memory("ok\nbad \xFF\n", "t.txt"), options);
  DOCTEST_CHECK(bad.next(r));
  DOCTEST_CHECK(error_of<kalm::FormatError>([&] { bad.next(r); }) == "t.txt:2: invalid UTF-8");

  kalm::io::JsonlReader groups(kalm::io::InputStream::from_memory("x\n", "t.txt"), options);
  kalm::io::TrainingGroup g;
  DOCTEST_CHECK_THROWS_AS(groups.next(g), kalm::UsageError);
}

DOCTEST_TEST_CASE("JsonlReader goes on after a bad record, but not after a broken stream") {
  kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(
      std::string(kGood) + "\n{\"query\":1,\"pos\":[\"p\"]}\n{bad\n" + R"({"query":"last","pos":["p"]})",
      "mixed.jsonl"));
  kalm::io::TrainingGroup g;
  std::vector<std::string> bad_lines, errors;
  std::size_t good = 0;
  for (;;) {
    try {
      if (!reader.next(g)) break;
      ++good;
    } catch (const kalm::FormatError& e) {
      bad_lines.emplace_back(reader.line());
      errors.emplace_back(e.what());
    }
  }
  DOCTEST_CHECK(good == 2);
  DOCTEST_CHECK(g.query == "last");
  DOCTEST_CHECK(bad_lines == std::vector<std::string>{"{\"query\":1,\"pos\":[\"p\"]}", "{bad"});
  DOCTEST_REQUIRE(errors.size() == 2);
  DOCTEST_CHECK(errors[0] == "mixed.jsonl:2: field \"query\" must be a string, not a number");
  DOCTEST_CHECK(errors[1].rfind("mixed.jsonl:3: invalid JSON", 0) == 0);

  // A corrupt zstd stream fails the same way on every call.
  std::string frame = zstd_frame(std::string(kGood) + "\n");
  kalm::io::JsonlReader broken(kalm::io::InputStream::from_memory(frame + "garbage!", "b.zst"));
  std::string first = error_of<kalm::FormatError>([&] { while (broken.next(g)) {} });
  std::string again = error_of<kalm::FormatError>([&] { broken.next(g); });
  DOCTEST_CHECK(first.rfind("b.zst: data after zstd frame 1", 0) == 0);
  DOCTEST_CHECK(again == first);

  // So does an over-long line, even when the next line is already in memory.
  kalm::io::ReaderOptions options;
  options.max_line_bytes = 20;
  kalm::io::JsonlReader longer(kalm::io::InputStream::from_memory(
      std::string(kGood) + "x" + "\n" + kGood + "\n", "l.jsonl"), options);
  first = error_of<kalm::FormatError>([&] { longer.next(g); });
  DOCTEST_CHECK(first == "l.jsonl:1: line is longer than 20 bytes (the maximum line length)");
  DOCTEST_CHECK(error_of<kalm::FormatError>([&] { longer.next(g); }) == first);
}

DOCTEST_TEST_CASE("JsonlReader reads back a score kalm wrote, even one whose shortest form is a long integer") {
  // Found by tests/fuzz/fuzz_config_json (the same writer): the shortest form of
  // 1.088888888888888e20 is "108888888888888800000", an integer past 64 bits,
  // which simdjson and so every kalm reader refuse. The writer now uses the
  // exponent form for those.
  auto num = [](double v) {
    std::string s;
    kalm::io::append_json_number(s, v);
    return s;
  };
  DOCTEST_CHECK(num(108888888888888800000.0) == "1.088888888888888e+20");
  DOCTEST_CHECK(num(-108888888888888800000.0) == "-1.088888888888888e+20");
  DOCTEST_CHECK(num(123456789012345678.0) == "123456789012345680");  // below 1e18: as before
  DOCTEST_CHECK(num(1e20) == "1e+20");
  kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(
      R"({"query":"q","pos":["p"],"pos_scores":[108888888888888800000.0]})", "mem"));
  kalm::io::TrainingGroup g;
  DOCTEST_REQUIRE(reader.next(g));
  std::string line;
  kalm::io::append_json(line, g);
  DOCTEST_CHECK(line == R"({"query":"q","pos":["p"],"neg":[],"pos_scores":[1.088888888888888e+20]})");
  kalm::io::JsonlReader again(kalm::io::InputStream::from_memory(line, "again"));
  kalm::io::TrainingGroup h;
  DOCTEST_REQUIRE(again.next(h));
  DOCTEST_CHECK(h.pos_scores == g.pos_scores);
}
