// The promise of kalm-train's export: the ids that transformers (and so
// sentence-transformers) computes for tests/fixtures/export/model equal the ids
// kalm computes. tests/fixtures/export/expected_spm_ids.jsonl holds, per text,
// the oracles' ids (gen_spm_ids.py): sentencepiece itself ("sp"), transformers'
// slow LlamaTokenizer ("slow") and LlamaTokenizerFast ("fast", what
// AutoTokenizer gives), with and without special tokens and truncated to
// model_max_length. kalm loads the directory as kalm-embed does
// (load_tokenizer + EncodeOptions) and must give "fast".
#include <doctest/doctest.h>
#include <simdjson.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/remove_tree.h"
#include "kalm/text/tokenizer.h"

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;

namespace {

const std::string kExportDir = std::string(KALM_FIXTURES_DIR) + "/export";

struct Row {
  std::string text;
  Ids sp, slow, fast, fast_special, fast_trunc, fast_nonlegacy;
};

Ids to_ids(simdjson::dom::element e) {
  Ids v;
  for (auto x : e.get_array()) v.push_back(static_cast<int32_t>(int64_t(x)));
  return v;
}

std::vector<Row> read_rows(std::size_t& max_length) {
  simdjson::dom::parser parser;
  std::ifstream in(kExportDir + "/expected_spm_ids.jsonl");
  std::string line;
  std::getline(in, line);
  simdjson::dom::element header = parser.parse(line);
  max_length = static_cast<std::size_t>(int64_t(header["max_length"]));
  std::vector<Row> rows;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    simdjson::dom::element r = parser.parse(line);
    Row row;
    row.text = std::string(std::string_view(r["text"]));
    row.sp = to_ids(r["sp"]);
    row.slow = to_ids(r["slow"]);
    row.fast = to_ids(r["fast"]);
    row.fast_special = to_ids(r["fast_special"]);
    row.fast_trunc = to_ids(r["fast_trunc"]);
    row.fast_nonlegacy = to_ids(r["fast_nonlegacy"]);
    rows.push_back(std::move(row));
  }
  return rows;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("kalm_spm_export_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() { kalm::io::remove_tree_nothrow(std::filesystem::path(path).string()); }
};

}  // namespace

DOCTEST_TEST_CASE("export: kalm's ids for an exported tokenizer.model equal LlamaTokenizerFast's") {
  std::size_t max_length = 0;
  const std::vector<Row> rows = read_rows(max_length);
  DOCTEST_REQUIRE(rows.size() >= 200);
  DOCTEST_REQUIRE(max_length == 24);

  auto tok = kalm::text::load_tokenizer(kExportDir + "/model");
  DOCTEST_CHECK(tok->model_max_length() == max_length);
  DOCTEST_CHECK(tok->pad_id() == 0);
  DOCTEST_CHECK(tok->num_special_tokens_added() == 0);

  std::size_t differ_from_sp = 0, differ_from_slow = 0;
  std::vector<std::string> texts;
  for (const Row& row : rows) {
    DOCTEST_INFO("text: \"" << row.text << "\"");
    const auto plain = tok->encode(row.text, kalm::text::EncodeOptions{false, std::nullopt});
    DOCTEST_CHECK(plain.ids == row.fast);
    DOCTEST_CHECK(!plain.truncated);
    // kalm-embed's settings: special tokens on, truncation to --max-length.
    const auto special = tok->encode(row.text, kalm::text::EncodeOptions{true, std::nullopt});
    DOCTEST_CHECK(special.ids == row.fast_special);
    const auto cut = tok->encode(row.text, kalm::text::EncodeOptions{true, max_length});
    DOCTEST_CHECK(cut.ids == row.fast_trunc);
    DOCTEST_CHECK(cut.truncated == (row.fast.size() > max_length));
    differ_from_sp += row.sp != row.fast;
    differ_from_slow += row.slow != row.fast;
    texts.push_back(row.text);
  }
  // The fixture really exercises the differences (NFKC, whitespace folding,
  // special-token strings): a plain sentencepiece encode would fail this test.
  DOCTEST_CHECK(differ_from_sp > 50);
  DOCTEST_CHECK(differ_from_slow > 50);

  // The batch path (OpenMP) gives the same ids in input order.
  const auto batch = tok->encode_batch(texts, kalm::text::EncodeOptions{true, max_length});
  DOCTEST_REQUIRE(batch.size() == rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) DOCTEST_CHECK(batch[i].ids == rows[i].fast_trunc);

  DOCTEST_CHECK_THROWS_AS(tok->encode("bad \xC3 utf-8", kalm::text::EncodeOptions{}), kalm::FormatError);
}

DOCTEST_TEST_CASE("export: legacy false and a bare tokenizer.model") {
  std::size_t max_length = 0;
  const std::vector<Row> rows = read_rows(max_length);
  DOCTEST_REQUIRE(!rows.empty());
  TempDir dir;
  fs::copy_file(kExportDir + "/model/tokenizer.model", dir.path / "tokenizer.model");

  DOCTEST_SUBCASE("LlamaTokenizer with legacy false: Metaspace prepend_scheme first") {
    std::ofstream(dir.path / "tokenizer_config.json")
        << R"({"tokenizer_class": "LlamaTokenizerFast", "legacy": false, "add_bos_token": false,
              "add_eos_token": false, "pad_token": "<unk>"})";
    auto tok = kalm::text::load_tokenizer(dir.path.string());
    std::size_t differ_from_legacy = 0;
    for (const Row& row : rows) {
      DOCTEST_INFO("text: \"" << row.text << "\"");
      DOCTEST_CHECK(tok->encode(row.text, kalm::text::EncodeOptions{false, std::nullopt}).ids == row.fast_nonlegacy);
      differ_from_legacy += row.fast_nonlegacy != row.fast;
    }
    DOCTEST_CHECK(differ_from_legacy > 5);
  }

  DOCTEST_SUBCASE("LlamaTokenizer with add_bos_token: <s> first, then the same ids") {
    std::ofstream(dir.path / "tokenizer_config.json")
        << R"({"tokenizer_class": "LlamaTokenizer", "legacy": true, "add_bos_token": true})";
    auto tok = kalm::text::load_tokenizer(dir.path.string());
    for (const Row& row : rows) {
      Ids want = {1};
      want.insert(want.end(), row.fast.begin(), row.fast.end());
      DOCTEST_CHECK(tok->encode(row.text, kalm::text::EncodeOptions{true, std::nullopt}).ids == want);
    }
  }

  DOCTEST_SUBCASE("no tokenizer_config.json: sentencepiece's own encoding (spm_encode)") {
    auto tok = kalm::text::load_tokenizer(dir.path.string());
    for (const Row& row : rows) {
      DOCTEST_INFO("text: \"" << row.text << "\"");
      DOCTEST_CHECK(tok->encode(row.text, kalm::text::EncodeOptions{true, std::nullopt}).ids == row.sp);
    }
  }

  DOCTEST_SUBCASE("a Llama config over a file that is not a SentencePiece model") {
    std::ofstream(dir.path / "tokenizer_config.json") << R"({"tokenizer_class": "LlamaTokenizer"})";
    {
      std::ofstream(dir.path / "tokenizer.model", std::ios::binary | std::ios::trunc) << "\x0a\xff\xff\xff";
    }
    DOCTEST_CHECK_THROWS_AS(kalm::text::load_tokenizer(dir.path.string()), kalm::ModelError);
  }

  DOCTEST_SUBCASE("legacy must be a boolean") {
    std::ofstream(dir.path / "tokenizer_config.json") << R"({"tokenizer_class": "LlamaTokenizer", "legacy": "yes"})";
    DOCTEST_CHECK_THROWS_AS(kalm::text::load_tokenizer(dir.path.string()), kalm::ModelError);
  }
}

// kalm-train exports a trained tokenizer.model as the tokenizer.json that
// LlamaTokenizerFast builds from it (sentencepiece_to_tokenizer_json), with
// tokenizer_class PreTrainedTokenizerFast: transformers 5 reads that file as it
// is. Read back through kalm's Unigram path it must give the oracle's "fast" ids
// for every text, as the tokenizer.model path does.
DOCTEST_TEST_CASE("export: the tokenizer.json written for a tokenizer.model gives LlamaTokenizerFast's ids") {
  std::size_t max_length = 0;
  const std::vector<Row> rows = read_rows(max_length);
  DOCTEST_REQUIRE(rows.size() >= 200);
  const std::string json = kalm::text::sentencepiece_to_tokenizer_json(kExportDir + "/model/tokenizer.model");
  DOCTEST_CHECK(json.find("\"type\": \"Unigram\"") != std::string::npos);
  auto tok = kalm::text::parse_hf_tokenizer_json(
      json,
      R"({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
          "unk_token": "<unk>", "pad_token": "<unk>", "model_max_length": 24})",
      "exported tokenizer.json");
  DOCTEST_CHECK(tok->pad_id() == 0);
  DOCTEST_CHECK(tok->bos_id() == 1);
  DOCTEST_CHECK(tok->num_special_tokens_added() == 0);
  auto spm = kalm::text::load_tokenizer(kExportDir + "/model");
  DOCTEST_CHECK(tok->vocab_size() == spm->vocab_size());
  for (const Row& row : rows) {
    DOCTEST_INFO("text: \"" << row.text << "\"");
    DOCTEST_CHECK(tok->encode(row.text, kalm::text::EncodeOptions{false, std::nullopt}).ids == row.fast);
    DOCTEST_CHECK(tok->encode(row.text, kalm::text::EncodeOptions{true, std::nullopt}).ids == row.fast_special);
    DOCTEST_CHECK(tok->encode(row.text, kalm::text::EncodeOptions{true, max_length}).ids == row.fast_trunc);
  }
  // Decoding: the Llama decoder (spaces back, prefix space stripped).
  const auto ids = tok->encode("a horse runs", kalm::text::EncodeOptions{false, std::nullopt}).ids;
  DOCTEST_CHECK(tok->decode(ids, true) == spm->decode(ids, true));
}

DOCTEST_TEST_CASE("export: sentencepiece_to_tokenizer_json refuses what it cannot convert") {
  TempDir dir;
  const std::string path = (dir.path / "tokenizer.model").string();
  {
    std::ofstream(path, std::ios::binary) << "\x0a\xff\xff\xff";
  }
  DOCTEST_CHECK_THROWS_AS(kalm::text::sentencepiece_to_tokenizer_json(path), kalm::ModelError);
  DOCTEST_CHECK_THROWS_AS(kalm::text::sentencepiece_to_tokenizer_json((dir.path / "missing.model").string()),
                          kalm::ModelError);
  // A BPE SentencePiece model: transformers derives merges kalm does not reproduce.
  kalm::text::SentencePieceTrainOptions so;
  so.model_type = "bpe";
  so.vocab_size = 40;
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) texts.push_back("the horse runs over the hill " + std::to_string(i));
  kalm::text::train_sentencepiece(texts, so, path);
  try {
    kalm::text::sentencepiece_to_tokenizer_json(path);
    DOCTEST_FAIL("a BPE model was converted");
  } catch (const kalm::ModelError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("model_type") != std::string::npos);
    DOCTEST_CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
}
