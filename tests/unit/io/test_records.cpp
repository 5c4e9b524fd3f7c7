// Record schemas (training groups, corpus records, raw fields), the JSON writer,
// rejects, and unknown fields through a read/modify/write.

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/jsonl.h"
#include "kalm/io/records.h"
#include "test_jsonl_util.h"

using kalm_test::error_of;
using kalm_test::read_file;
using kalm_test::TempDir;

namespace {

kalm::io::TrainingGroup parse_group(const std::string& line) {
  kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(line + "\n", "g.jsonl"));
  kalm::io::TrainingGroup g;
  if (!reader.next(g)) throw std::runtime_error("no record");
  return g;
}

kalm::io::CorpusRecord parse_corpus(const std::string& line) {
  kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(line + "\n", "c.jsonl"));
  kalm::io::CorpusRecord r;
  if (!reader.next(r)) throw std::runtime_error("no record");
  return r;
}

std::string group_error(const std::string& line) {
  return error_of<kalm::FormatError>([&] { parse_group(line); });
}

std::string corpus_error(const std::string& line) {
  return error_of<kalm::FormatError>([&] { parse_corpus(line); });
}

std::string to_json(const kalm::io::TrainingGroup& g) {
  std::string s;
  kalm::io::append_json(s, g);
  return s;
}

}  // namespace

DOCTEST_TEST_CASE("TrainingGroup: every field read with its type") {
  auto g = parse_group(
      R"({"query":"Instruct: find \"it\" \n Query: q\u00e9","pos":["p1","p2"],"neg":["n1","n2","n3"],)"
      R"("pos_scores":[0.5,1],"neg_scores":[-0.25,1e-3,2E2],"task":"msmarco",)"
      R"("instruction":"Given a query","type":"retrieval"})");
  DOCTEST_CHECK(g.query == "Instruct: find \"it\" \n Query: q\xC3\xA9");
  DOCTEST_CHECK(g.pos == std::vector<std::string>{"p1", "p2"});
  DOCTEST_CHECK(g.neg == std::vector<std::string>{"n1", "n2", "n3"});
  DOCTEST_CHECK(g.pos_scores == std::vector<double>{0.5, 1.0});
  DOCTEST_CHECK(g.neg_scores == std::vector<double>{-0.25, 0.001, 200.0});
  DOCTEST_CHECK(*g.task == "msmarco");
  DOCTEST_CHECK(*g.instruction == "Given a query");
  DOCTEST_CHECK(*g.type == kalm::io::TaskType::kRetrieval);
  DOCTEST_CHECK(g.extra.empty());
}

DOCTEST_TEST_CASE("TrainingGroup: optional fields default, null counts as absent") {
  auto g = parse_group(R"({"pos":["p"],"query":"q"})");
  DOCTEST_CHECK(g.query == "q");
  DOCTEST_CHECK(g.neg.empty());
  DOCTEST_CHECK(g.pos_scores.empty());
  DOCTEST_CHECK_FALSE(g.task.has_value());
  DOCTEST_CHECK_FALSE(g.instruction.has_value());
  DOCTEST_CHECK_FALSE(g.type.has_value());
  g = parse_group(R"({"query":"q","pos":["p"],"neg":null,"neg_scores":null,"task":null,"type":null})");
  DOCTEST_CHECK(g.neg.empty());
  DOCTEST_CHECK_FALSE(g.task.has_value());
  DOCTEST_CHECK_FALSE(g.type.has_value());
}

DOCTEST_TEST_CASE("TrainingGroup: a reused record forgets the previous line's fields") {
  kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(
      R"({"query":"a","pos":["p","p2"],"neg":["n"],"neg_scores":[1],"task":"t","type":"sts","x":1})"
      "\n"
      R"({"query":"b","pos":["q"]})"
      "\n",
      "g.jsonl"));
  kalm::io::TrainingGroup g;
  DOCTEST_REQUIRE(reader.next(g));
  DOCTEST_CHECK(g.extra.size() == 1);
  DOCTEST_REQUIRE(reader.next(g));
  DOCTEST_CHECK(g.query == "b");
  DOCTEST_CHECK(g.pos == std::vector<std::string>{"q"});
  DOCTEST_CHECK(g.neg.empty());
  DOCTEST_CHECK(g.neg_scores.empty());
  DOCTEST_CHECK_FALSE(g.task.has_value());
  DOCTEST_CHECK_FALSE(g.type.has_value());
  DOCTEST_CHECK(g.extra.empty());
}

DOCTEST_TEST_CASE("TrainingGroup: every task type name") {
  for (const char* name : {"retrieval", "sts", "classification", "clustering", "reranking", "pair", "bitext"}) {
    auto g = parse_group(std::string(R"({"query":"q","pos":["p"],"type":")") + name + "\"}");
    DOCTEST_REQUIRE(g.type.has_value());
    DOCTEST_CHECK(kalm::io::task_type_name(*g.type) == name);
  }
  DOCTEST_CHECK_FALSE(kalm::io::parse_task_type("Retrieval").has_value());
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"type":"search"})") ==
                "g.jsonl:1: field \"type\" is \"search\"; expected one of retrieval, sts, "
                "classification, clustering, reranking, pair, bitext");
}

DOCTEST_TEST_CASE("TrainingGroup: wrong field types name the field and file:line") {
  DOCTEST_CHECK(group_error(R"({"query":["q"],"pos":["p"]})") ==
                "g.jsonl:1: field \"query\" must be a string, not an array");
  DOCTEST_CHECK(group_error(R"({"query":null,"pos":["p"]})") ==
                "g.jsonl:1: field \"query\" must be a string, not null");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":"p"})") ==
                "g.jsonl:1: field \"pos\" must be an array of strings, not a string");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p",3]})") ==
                "g.jsonl:1: field \"pos\" must be an array of strings, but element 1 is a number");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"neg":[["n"]]})") ==
                "g.jsonl:1: field \"neg\" must be an array of strings, but element 0 is an array");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"pos_scores":["0.5"]})") ==
                "g.jsonl:1: field \"pos_scores\" must be an array of numbers, but element 0 is a string");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"neg_scores":{}})") ==
                "g.jsonl:1: field \"neg_scores\" must be an array of numbers, not an object");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"task":7})") ==
                "g.jsonl:1: field \"task\" must be a string, not a number");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"instruction":true})") ==
                "g.jsonl:1: field \"instruction\" must be a string, not a boolean");
}

DOCTEST_TEST_CASE("TrainingGroup: missing, empty, duplicate and inconsistent fields") {
  DOCTEST_CHECK(group_error(R"({"pos":["p"]})") == "g.jsonl:1: missing required field \"query\"");
  DOCTEST_CHECK(group_error(R"({"query":"q"})") == "g.jsonl:1: missing required field \"pos\"");
  DOCTEST_CHECK(group_error(R"({})") == "g.jsonl:1: missing required field \"query\"");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":[]})") ==
                "g.jsonl:1: field \"pos\" is empty; a training group needs a positive");
  DOCTEST_CHECK(group_error(R"({"query":"q","query":"r","pos":["p"]})") ==
                "g.jsonl:1: duplicate field \"query\"");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"pos_scores":[1,2]})") ==
                "g.jsonl:1: field \"pos_scores\" has 2 entries but \"pos\" has 1");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"neg":["a","b"],"neg_scores":[1]})") ==
                "g.jsonl:1: field \"neg_scores\" has 1 entries but \"neg\" has 2");
  // An escaped key is the same key.
  DOCTEST_CHECK(group_error(R"({"query":"q","\u0071uery":"r","pos":["p"]})") ==
                "g.jsonl:1: duplicate field \"query\"");
}

DOCTEST_TEST_CASE("CorpusRecord: text, ids, pre-tokenised input") {
  auto r = parse_corpus(R"({"id":"doc-1","text":"hello \"world\""})");
  DOCTEST_CHECK(r.has_id);
  DOCTEST_CHECK(r.id == "doc-1");
  DOCTEST_CHECK(r.has_text);
  DOCTEST_CHECK(r.text == "hello \"world\"");
  r = parse_corpus(R"({"text":"no id"})");
  DOCTEST_CHECK_FALSE(r.has_id);
  DOCTEST_CHECK(r.id.empty());
  r = parse_corpus(R"({"id":12345678901234567890,"text":"t"})");
  DOCTEST_CHECK(r.id == "12345678901234567890");
  r = parse_corpus(R"({"id":-7,"text":"t"})");
  DOCTEST_CHECK(r.id == "-7");
  r = parse_corpus(R"({"input_ids":[151643, 0, 9],"id":3,"title":"kept"})");
  DOCTEST_CHECK_FALSE(r.has_text);
  DOCTEST_CHECK(r.input_ids == std::vector<std::int64_t>{151643, 0, 9});
  DOCTEST_CHECK(r.id == "3");
  DOCTEST_REQUIRE(r.extra.size() == 1);
  DOCTEST_CHECK(r.extra[0].key == "title");
  DOCTEST_CHECK(r.extra[0].value == "\"kept\"");
}

DOCTEST_TEST_CASE("CorpusRecord: bad records name the field and file:line") {
  DOCTEST_CHECK(corpus_error(R"({"id":"x"})") == "c.jsonl:1: missing required field \"text\"");
  DOCTEST_CHECK(corpus_error(R"({"text":1})") == "c.jsonl:1: field \"text\" must be a string, not a number");
  DOCTEST_CHECK(corpus_error(R"({"text":"a","input_ids":[1]})") ==
                "c.jsonl:1: a record has either \"text\" or \"input_ids\", this one has both");
  DOCTEST_CHECK(corpus_error(R"({"id":1.5,"text":"a"})") ==
                "c.jsonl:1: field \"id\" must be a string or an integer, not the number 1.5");
  DOCTEST_CHECK(corpus_error(R"({"id":[1],"text":"a"})") ==
                "c.jsonl:1: field \"id\" must be a string or an integer, not an array");
  DOCTEST_CHECK(corpus_error(R"({"input_ids":[1,2.5]})") ==
                "c.jsonl:1: field \"input_ids\" must be an array of non-negative integers, but element 1 is 2.5");
  DOCTEST_CHECK(corpus_error(R"({"input_ids":[1,-2]})") ==
                "c.jsonl:1: field \"input_ids\" must be an array of non-negative integers, but element 1 is -2");
  DOCTEST_CHECK(corpus_error(R"({"input_ids":["1"]})") ==
                "c.jsonl:1: field \"input_ids\" must be an array of non-negative integers, but element 0 is a string");
  DOCTEST_CHECK(corpus_error(R"({"input_ids":"1 2"})") ==
                "c.jsonl:1: field \"input_ids\" must be an array of integers, not a string");
}

DOCTEST_TEST_CASE("numbers beyond 64-bit integers and doubles are named as such, not called invalid JSON") {
  DOCTEST_CHECK(corpus_error(R"({"id":123456789012345678901234567890,"text":"a"})") ==
                "c.jsonl:1: field \"id\" is the integer 12345678...7890 (30 characters), too large for a 64-bit "
                "integer id; write it as a string to keep every digit");
  DOCTEST_CHECK(corpus_error(R"({"id":-9223372036854775809,"text":"a"})") ==
                "c.jsonl:1: field \"id\" is the integer -9223372036854775809, too large for a 64-bit integer id; "
                "write it as a string to keep every digit");
  DOCTEST_CHECK(parse_corpus(R"({"id":18446744073709551615,"text":"a"})").id == "18446744073709551615");
  DOCTEST_CHECK(corpus_error(R"({"id":1e400,"text":"a"})") ==
                "c.jsonl:1: field \"id\" must be a string or an integer, not the number 1e400");
  DOCTEST_CHECK(corpus_error(R"({"id":01,"text":"a"})").rfind("c.jsonl:1: invalid JSON", 0) == 0);
  DOCTEST_CHECK(corpus_error(R"({"input_ids":[1,99999999999999999999]})") ==
                "c.jsonl:1: field \"input_ids\" must be an array of non-negative integers, but element 1 is "
                "99999999999999999999");
  DOCTEST_CHECK(corpus_error(R"({"text":"a","n":123456789012345678901234567890})") ==
                "c.jsonl:1: field \"n\" is the number 12345678...7890 (30 characters), beyond what kalm reads "
                "(64-bit integers and doubles); write it as a string to keep it");
  DOCTEST_CHECK(group_error(R"({"query":"q","pos":["p"],"pos_scores":[1e999]})") ==
                "g.jsonl:1: field \"pos_scores\": element 0, the number 1e999, is beyond the range of a double");
}

DOCTEST_TEST_CASE("RawFields: every field raw, validated, in order") {
  kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(
      R"({ "b" : [1, {"x": null}] , "a":"s\"\u00e9" ,"n": -1.50e+3, "t":true,"o":{}, "k\"ey":null })"
      "\n{}\n",
      "raw.jsonl"));
  kalm::io::RawFields f;
  DOCTEST_REQUIRE(reader.next(f));
  DOCTEST_REQUIRE(f.size() == 6);
  DOCTEST_CHECK(f[0].key == "b");
  DOCTEST_CHECK(f[0].value == R"([1, {"x": null}])");
  DOCTEST_CHECK(f[1].value == R"("s\"\u00e9")");
  DOCTEST_CHECK(f[2].value == "-1.50e+3");
  DOCTEST_CHECK(f[3].value == "true");
  DOCTEST_CHECK(f[4].value == "{}");
  DOCTEST_CHECK(f[5].key == "k\"ey");
  DOCTEST_CHECK(f[5].value == "null");
  DOCTEST_CHECK(*f.find("n") == "-1.50e+3");
  DOCTEST_CHECK(f.find("zz") == nullptr);
  std::string out;
  kalm::io::append_json(out, f);
  DOCTEST_CHECK(out == R"({"b":[1, {"x": null}],"a":"s\"\u00e9","n":-1.50e+3,"t":true,"o":{},"k\"ey":null})");
  DOCTEST_REQUIRE(reader.next(f));
  DOCTEST_CHECK(f.empty());

  f.add("x", "1");
  f.add("y", "2");
  f.add("x", "3");
  f.set("y", "[]");
  f.set("z", "\"new\"");
  DOCTEST_CHECK(f.erase("x"));
  DOCTEST_CHECK_FALSE(f.erase("x"));
  out.clear();
  kalm::io::append_json(out, f);
  DOCTEST_CHECK(out == R"({"y":[],"z":"new"})");
}

DOCTEST_TEST_CASE("JSON strings: escapes exactly what JSON requires") {
  std::string out;
  kalm::io::append_json_string(out, std::string("a\"b\\c\nd\re\tf\bg\fh\x01i\x1fj\x7f/\0k", 23));
  DOCTEST_CHECK(out == "\"a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u001fj\x7f/\\u0000k\"");
  out.clear();
  kalm::io::append_json_string(out, "caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80 \xE2\x80\xA8");
  DOCTEST_CHECK(out == "\"caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80 \xE2\x80\xA8\"");
  out.clear();
  std::string msg = error_of<kalm::FormatError>([&] { kalm::io::append_json_string(out, "bad \xC3("); });
  DOCTEST_CHECK(msg == "cannot write a JSON string that is not valid UTF-8: \"bad \\u00c3(\"");
}

DOCTEST_TEST_CASE("JSON numbers: shortest round trip, no NaN") {
  auto num = [](double v) {
    std::string s;
    kalm::io::append_json_number(s, v);
    return s;
  };
  DOCTEST_CHECK(num(1) == "1");
  DOCTEST_CHECK(num(0.1) == "0.1");
  DOCTEST_CHECK(num(-0.25) == "-0.25");
  DOCTEST_CHECK(num(1e-7) == "1e-07");
  DOCTEST_CHECK(num(0.30000000000000004) == "0.30000000000000004");
  DOCTEST_CHECK(std::stod(num(0.1 + 0.2)) == 0.1 + 0.2);
  DOCTEST_CHECK_THROWS_AS(num(std::nan("")), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(num(std::numeric_limits<double>::infinity()), kalm::FormatError);
}

DOCTEST_TEST_CASE("Writer: canonical training groups that read back equal") {
  kalm::io::TrainingGroup g;
  g.query = "q \"1\"\n";
  g.pos = {"p"};
  g.neg = {"n1", "n2"};
  g.neg_scores = {0.5, 0.25};
  g.instruction = "Given a query";
  g.type = kalm::io::TaskType::kBitext;
  DOCTEST_CHECK(to_json(g) ==
                R"({"query":"q \"1\"\n","pos":["p"],"neg":["n1","n2"],"neg_scores":[0.5,0.25],)"
                R"("instruction":"Given a query","type":"bitext"})");
  auto back = parse_group(to_json(g));
  DOCTEST_CHECK(back.query == g.query);
  DOCTEST_CHECK(back.neg == g.neg);
  DOCTEST_CHECK(back.neg_scores == g.neg_scores);
  DOCTEST_CHECK(back.instruction == g.instruction);
  DOCTEST_CHECK(back.type == g.type);
  DOCTEST_CHECK_FALSE(back.task.has_value());

  g.pos_scores = {1, 2};
  DOCTEST_CHECK_THROWS_AS(to_json(g), kalm::FormatError);

  kalm::io::CorpusRecord c;
  c.text = "t";
  std::string s;
  kalm::io::append_json(s, c);
  DOCTEST_CHECK(s == R"({"text":"t"})");
  c.has_id = true;
  c.id = "7";
  c.has_text = false;
  c.input_ids = {1, 2};
  s.clear();
  kalm::io::append_json(s, c);
  DOCTEST_CHECK(s == R"({"id":"7","input_ids":[1,2]})");
}

DOCTEST_TEST_CASE("Unknown fields survive a read/modify/write untouched") {
  TempDir dir;
  std::string in_path = dir.file("in.jsonl.zst");
  std::string out_path = dir.file("out.jsonl");
  std::string line1 =
      R"({"meta":{"src": "wiki", "n": [1, 2.50, -0e0]},"query":"q","pos":["p"],"neg":["old"],)"
      R"("score": 1.0000,"note":"caf\u00e9 \ud83d\ude00","flag":false,"nil":null})";
  std::string line2 = R"({"query":"r","pos":["s"]})";
  {
    kalm::io::OutputStream raw(in_path);
    raw.write(line1 + "\n" + line2 + "\n");
    raw.finish();
  }
  {
    kalm::io::JsonlReader reader(in_path);
    kalm::io::JsonlWriter writer(out_path);
    kalm::io::TrainingGroup g;
    while (reader.next(g)) {
      g.neg = {"mined 1", "mined 2"};
      g.neg_scores = {0.75, 0.5};
      writer.write(g);
    }
    writer.finish();
  }
  std::string out = read_file(out_path);
  DOCTEST_CHECK(out ==
                R"({"query":"q","pos":["p"],"neg":["mined 1","mined 2"],"neg_scores":[0.75,0.5],)"
                R"("meta":{"src": "wiki", "n": [1, 2.50, -0e0]},"score":1.0000,)"
                R"("note":"caf\u00e9 \ud83d\ude00","flag":false,"nil":null})"
                "\n"
                R"({"query":"r","pos":["s"],"neg":["mined 1","mined 2"],"neg_scores":[0.75,0.5]})"
                "\n");
}

DOCTEST_TEST_CASE("Rejects: the record unchanged plus _reject as the last field") {
  auto reject = [](std::string_view raw, const kalm::io::RawFields& extra = {}) {
    std::string s;
    kalm::io::append_reject(s, raw, "filter", "too \"short\"", extra);
    return s;
  };
  DOCTEST_CHECK(reject(R"({"query":"q", "x": [1]})") ==
                R"({"query":"q", "x": [1],"_reject":{"stage":"filter","reason":"too \"short\""}})");
  DOCTEST_CHECK(reject("{}") == R"({"_reject":{"stage":"filter","reason":"too \"short\""}})");
  DOCTEST_CHECK(reject(" { } \r") == R"({ "_reject":{"stage":"filter","reason":"too \"short\""}})");
  kalm::io::RawFields extra;
  extra.add("score", "0.125");
  extra.add("rule", "\"len\"");
  DOCTEST_CHECK(reject(R"({"a":1})", extra) ==
                R"({"a":1,"_reject":{"stage":"filter","reason":"too \"short\"","score":0.125,"rule":"len"}})");
  // Lines that are not JSON objects are kept as strings, never lost.
  DOCTEST_CHECK(reject(R"({"a":)") ==
                R"({"_raw":"{\"a\":","_reject":{"stage":"filter","reason":"too \"short\""}})");
  DOCTEST_CHECK(reject("[1]") == R"({"_raw":"[1]","_reject":{"stage":"filter","reason":"too \"short\""}})");
  DOCTEST_CHECK(reject("x\xFFy") ==
                R"({"_raw_latin1":"x\u00ffy","_reject":{"stage":"filter","reason":"too \"short\""}})");

  // Through the writer, with the reader's raw line; each output line parses.
  TempDir dir;
  std::string path = dir.file("rejects.jsonl");
  {
    kalm::io::JsonlReader reader(kalm::io::InputStream::from_memory(
        "{\"query\":\"q\",\"pos\":[\"p\"],\"z\":{}}\r\n{}\n", "in.jsonl"));
    kalm::io::JsonlWriter writer(path);
    kalm::io::RawFields f;
    while (reader.next(f)) writer.write_reject(reader.line(), "dedup", "duplicate");
    writer.finish();
  }
  std::string want =
      R"({"query":"q","pos":["p"],"z":{},"_reject":{"stage":"dedup","reason":"duplicate"}})"
      "\n"
      R"({"_reject":{"stage":"dedup","reason":"duplicate"}})"
      "\n";
  DOCTEST_CHECK(read_file(path) == want);
  kalm::io::JsonlReader back(path);
  kalm::io::RawFields f;
  std::size_t n = 0;
  while (back.next(f)) {
    DOCTEST_CHECK(f[f.size() - 1].key == "_reject");
    ++n;
  }
  DOCTEST_CHECK(n == 2);
}

DOCTEST_TEST_CASE("Writer: an unfinished writer leaves no file behind") {
  TempDir dir;
  for (std::string name : {"groups.jsonl", "groups.jsonl.zst"}) {
    std::string path = dir.file(name);
    try {
      kalm::io::JsonlWriter writer(path);
      kalm::io::TrainingGroup g;
      g.query = "q";
      g.pos = {"p"};
      for (int i = 0; i < 1000; ++i) writer.write(g);
      g.pos_scores = {std::nan("")};
      writer.write(g);  // throws: NaN has no JSON spelling
      writer.finish();
      DOCTEST_FAIL("the NaN score was written");
    } catch (const kalm::FormatError& e) {
      DOCTEST_CHECK(std::string(e.what()).find("not a finite number") != std::string::npos);
    }
    DOCTEST_CHECK_FALSE(std::filesystem::exists(path));
  }
  DOCTEST_CHECK(dir.entries().empty());
}
