// Parity with Hugging Face tokenizers on the real Qwen3 and Gemma3 tokenizer.json
// files: every id of tests/fixtures/tokenizers/expected_*.jsonl, produced by HF's
// own library (gen_fixtures.py, `tokenizers` from PyPI), must come out of kalm
// unchanged.
//
// The tokenizer.json files are not in git (11 MB and 33 MB): they come from
// shared/data/tokenizers, staged by tests/fixtures/tokenizers/stage_real_tokenizers.sh
// (scripts/setup.sh runs it) into .oracle/tokenizers/<model>/; KALM_TOKENIZER_DIR
// names another folder of that shape.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kalm/text/tokenizer.h"

namespace {

std::string tokenizer_dir() {
  if (const char* env = std::getenv("KALM_TOKENIZER_DIR")) return env;
  return std::string(KALM_SOURCE_DIR) + "/.oracle/tokenizers";
}

bool exists(const std::string& path) { return std::ifstream(path).good(); }

struct Expected {
  std::vector<int32_t> ids;
  std::vector<int32_t> ids_special;
  std::vector<int32_t> trunc;
  bool has_trunc = false;
  std::string decoded;
};

std::vector<int32_t> to_ids(simdjson::dom::element e) {
  std::vector<int32_t> v;
  for (auto x : e.get_array()) v.push_back(static_cast<int32_t>(int64_t(x)));
  return v;
}

std::vector<std::string> read_texts() {
  simdjson::dom::parser parser;
  std::vector<std::string> texts;
  std::ifstream in(std::string(KALM_FIXTURES_DIR) + "/tokenizers/texts.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    texts.emplace_back(std::string_view(parser.parse(line)["text"]));
  }
  return texts;
}

std::vector<Expected> read_expected(const std::string& model, const std::vector<std::string>& texts,
                                    std::size_t& trunc_len) {
  simdjson::dom::parser parser;
  std::ifstream in(std::string(KALM_FIXTURES_DIR) + "/tokenizers/expected_" + model + ".jsonl");
  std::string line;
  std::getline(in, line);
  simdjson::dom::element header = parser.parse(line);
  trunc_len = static_cast<std::size_t>(int64_t(header["trunc_len"]));
  const std::vector<int32_t> prefix = to_ids(header["special_prefix"]);
  std::vector<Expected> out;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    simdjson::dom::element r = parser.parse(line);
    Expected e;
    e.ids = to_ids(r["ids"]);
    simdjson::dom::element v;
    if (r["ids_special"].get(v) == simdjson::SUCCESS) {
      e.ids_special = to_ids(v);
    } else {
      e.ids_special = prefix;
      e.ids_special.insert(e.ids_special.end(), e.ids.begin(), e.ids.end());
    }
    if (r["trunc"].get(v) == simdjson::SUCCESS) {
      e.trunc = to_ids(v);
      e.has_trunc = true;
    }
    std::string_view d;
    if (r["decoded"].get(d) == simdjson::SUCCESS) {
      e.decoded = std::string(d);
    } else {
      e.decoded = texts[out.size()];
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::string show(const std::vector<int32_t>& ids) {
  std::ostringstream s;
  s << "[";
  for (std::size_t i = 0; i < ids.size() && i < 40; ++i) s << (i ? "," : "") << ids[i];
  if (ids.size() > 40) s << ",... (" << ids.size() << ")";
  s << "]";
  return s.str();
}

void check_model(const std::string& model) {
  const std::string dir = tokenizer_dir() + "/" + model;
  const std::string json = dir + "/tokenizer.json";
  if (!exists(json)) {
    DOCTEST_FAIL("missing " << json
                            << ": run tests/fixtures/tokenizers/stage_real_tokenizers.sh (or set "
                               "KALM_TOKENIZER_DIR) to stage the real Qwen3/Gemma3 tokenizer files");
  }
  auto tok = kalm::text::load_hf_tokenizer_json(json, dir + "/tokenizer_config.json");
  const std::vector<std::string> texts = read_texts();
  std::size_t trunc_len = 0;
  const std::vector<Expected> expected = read_expected(model, texts, trunc_len);
  DOCTEST_REQUIRE(texts.size() > 2000);
  DOCTEST_REQUIRE(expected.size() == texts.size());

  kalm::text::EncodeOptions plain{false, std::nullopt};
  kalm::text::EncodeOptions special{true, std::nullopt};
  kalm::text::EncodeOptions cut{true, trunc_len};
  std::size_t bad_plain = 0, bad_special = 0, bad_trunc = 0, bad_decode = 0, ids_total = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const Expected& e = expected[i];
    ids_total += e.ids.size();
    const auto a = tok->encode(texts[i], plain);
    if (a.ids != e.ids && bad_plain++ < 5) {
      DOCTEST_MESSAGE(model << " text #" << i + 1 << " " << show(a.ids) << " != oracle " << show(e.ids));
    }
    const auto b = tok->encode(texts[i], special);
    if (b.ids != e.ids_special && bad_special++ < 5) {
      DOCTEST_MESSAGE(model << " special text #" << i + 1 << " " << show(b.ids) << " != " << show(e.ids_special));
    }
    const auto c = tok->encode(texts[i], cut);
    const auto& want = e.has_trunc ? e.trunc : e.ids_special;
    if ((c.ids != want || c.truncated != e.has_trunc) && bad_trunc++ < 5) {
      DOCTEST_MESSAGE(model << " truncated text #" << i + 1 << " " << show(c.ids) << " != " << show(want));
    }
    const std::string d = tok->decode(e.ids, true);
    if (d != e.decoded && bad_decode++ < 5) {
      DOCTEST_MESSAGE(model << " decode text #" << i + 1 << " \"" << d << "\" != \"" << e.decoded << "\"");
    }
  }
  DOCTEST_MESSAGE(model << ": " << texts.size() << " texts, " << ids_total << " ids compared");
  DOCTEST_CHECK(bad_plain == 0);
  DOCTEST_CHECK(bad_special == 0);
  DOCTEST_CHECK(bad_trunc == 0);
  DOCTEST_CHECK(bad_decode == 0);

  // The batch path (OpenMP) gives the same ids in the same order.
  const auto batch = tok->encode_batch(texts, special);
  DOCTEST_REQUIRE(batch.size() == texts.size());
  std::size_t bad_batch = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) bad_batch += batch[i].ids != expected[i].ids_special;
  DOCTEST_CHECK(bad_batch == 0);
}

}  // namespace

DOCTEST_TEST_CASE("Qwen3 tokenizer.json: ids identical to Hugging Face tokenizers") { check_model("qwen3"); }

DOCTEST_TEST_CASE("Gemma3 tokenizer.json: ids identical to Hugging Face tokenizers") { check_model("gemma3"); }
