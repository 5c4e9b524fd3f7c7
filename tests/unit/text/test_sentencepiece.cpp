// SentencePiece .model path: train a tiny model, encode/decode round trip, ids
// identical to Debian's `spm_encode` command-line tool on the same model.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/remove_tree.h"
#include "kalm/text/tokenizer.h"

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("kalm_spm_test_" + std::to_string(::getpid()) + "_" + std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() { kalm::io::remove_tree_nothrow(std::filesystem::path(path).string()); }
};

// A few hundred deterministic sentences over a small multilingual word list.
std::vector<std::string> corpus() {
  const std::vector<std::string> words = {
      "the", "model", "learns", "embedding", "text", "query", "passage", "retrieval", "of", "and",
      "a", "token", "vector", "search", "data", "train", "loss", "batch", "negative", "positive",
      "caf\xC3\xA9", "na\xC3\xAFve", "stra\xC3\x9F" "e", "\xE6\x96\x87\xE6\x9C\xAC", "\xE6\xA8\xA1\xE5\x9E\x8B",
      "2026", "42", "fast", "slow", "good"};
  std::vector<std::string> lines;
  uint32_t state = 12345;
  for (int i = 0; i < 400; ++i) {
    std::string line;
    const int n = 4 + i % 9;
    for (int k = 0; k < n; ++k) {
      state = state * 1664525u + 1013904223u;
      if (k) line += ' ';
      line += words[(state >> 16) % words.size()];
    }
    line += i % 3 ? "." : "?";
    lines.push_back(line);
  }
  return lines;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<Ids> spm_encode(const fs::path& model, const std::vector<std::string>& texts, const fs::path& dir) {
  const fs::path in = dir / "in.txt", out = dir / "out.txt";
  {
    std::ofstream f(in);
    for (const auto& t : texts) f << t << "\n";
  }
  const std::string cmd = "spm_encode --model=" + model.string() + " --output_format=id < " + in.string() +
                          " > " + out.string() + " 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return {};
  std::vector<Ids> result;
  std::ifstream f(out);
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream s(line);
    Ids ids;
    int32_t id;
    while (s >> id) ids.push_back(id);
    result.push_back(ids);
  }
  return result;
}

}  // namespace

DOCTEST_TEST_CASE("train_sentencepiece + load_sentencepiece: round trip and spm_encode parity") {
  if (std::system("command -v spm_encode > /dev/null 2>&1") != 0) {
    DOCTEST_FAIL("spm_encode not found: install Debian's sentencepiece package");
  }
  const std::vector<std::string> lines = corpus();
  const std::vector<std::string> probes = {"the model learns text.", "caf\xC3\xA9 and stra\xC3\x9F" "e 2026?",
                                           "\xE6\x96\x87\xE6\x9C\xAC \xE6\xA8\xA1\xE5\x9E\x8B embedding",
                                           "unseen words zebra quokka", "x"};
  for (const std::string type : {"bpe", "unigram"}) {
    DOCTEST_INFO("model_type " << type);
    TempDir dir;
    kalm::text::SentencePieceTrainOptions opt;
    opt.vocab_size = 60;
    opt.model_type = type;
    opt.character_coverage = 1.0;
    const fs::path model = dir.path / "tokenizer.model";
    kalm::text::train_sentencepiece(lines, opt, model.string());
    DOCTEST_REQUIRE(fs::exists(model));

    // Same texts, same options: the same bytes.
    const fs::path again = dir.path / "again.model";
    kalm::text::train_sentencepiece(lines, opt, again.string());
    DOCTEST_CHECK(slurp(model) == slurp(again));

    auto tok = kalm::text::load_sentencepiece(model.string());
    DOCTEST_CHECK(tok->vocab_size() == 60);
    DOCTEST_CHECK(tok->unk_id() == 0);
    DOCTEST_CHECK(tok->bos_id() == 1);
    DOCTEST_CHECK(tok->eos_id() == 2);
    DOCTEST_CHECK(tok->token_to_id("<unk>") == 0);
    DOCTEST_CHECK(!tok->token_to_id("no such piece"));
    DOCTEST_CHECK(tok->id_to_token(1) == std::string("<s>"));

    std::vector<std::string> texts = probes;
    texts.insert(texts.end(), lines.begin(), lines.begin() + 50);
    const std::vector<Ids> reference = spm_encode(model, texts, dir.path);
    DOCTEST_REQUIRE(reference.size() == texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
      const auto e = tok->encode(texts[i], kalm::text::EncodeOptions{});
      DOCTEST_CHECK(e.ids == reference[i]);
      DOCTEST_CHECK(!e.truncated);
      if (i != 3) DOCTEST_CHECK(tok->decode(e.ids) == texts[i]);  // probe 3 has unknown letters
    }
    // Truncation and the batch path.
    const auto cut = tok->encode(lines[0], kalm::text::EncodeOptions{true, 3});
    DOCTEST_CHECK(cut.ids.size() == 3);
    DOCTEST_CHECK(cut.truncated);
    const auto batch = tok->encode_batch(texts, kalm::text::EncodeOptions{});
    for (std::size_t i = 0; i < texts.size(); ++i) DOCTEST_CHECK(batch[i].ids == reference[i]);

    // Through a model directory with a tokenizer_config.json asking for <s> ... </s>.
    std::ofstream(dir.path / "tokenizer_config.json")
        << R"({"add_bos_token": true, "add_eos_token": true, "pad_token": "<unk>", "model_max_length": 64})";
    auto dir_tok = kalm::text::load_tokenizer(dir.path.string());
    const auto with = dir_tok->encode(probes[0], kalm::text::EncodeOptions{});
    Ids expected = {1};
    expected.insert(expected.end(), reference[0].begin(), reference[0].end());
    expected.push_back(2);
    DOCTEST_CHECK(with.ids == expected);
    DOCTEST_CHECK(dir_tok->decode(with.ids, true) == probes[0]);
    DOCTEST_CHECK(dir_tok->pad_id() == 0);
    DOCTEST_CHECK(dir_tok->model_max_length() == std::size_t{64});
    const auto short_cut = dir_tok->encode(probes[0], kalm::text::EncodeOptions{true, 3});
    DOCTEST_CHECK(short_cut.ids == Ids{1, reference[0][0], 2});
    DOCTEST_CHECK_THROWS_AS(dir_tok->encode("x", kalm::text::EncodeOptions{true, 1}), kalm::UsageError);
    DOCTEST_CHECK_THROWS_AS(tok->decode({100000}), kalm::FormatError);
    DOCTEST_CHECK_THROWS_AS(tok->encode("bad \xFF", kalm::text::EncodeOptions{}), kalm::FormatError);
  }
}

DOCTEST_TEST_CASE("train_sentencepiece rejects bad options and data") {
  TempDir dir;
  const std::string out = (dir.path / "m.model").string();
  kalm::text::SentencePieceTrainOptions opt;
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_sentencepiece({}, opt, out), kalm::UsageError);
  opt.model_type = "wordpiece";
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_sentencepiece({"a b"}, opt, out), kalm::UsageError);
  opt = {};
  opt.character_coverage = 0;
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_sentencepiece({"a b"}, opt, out), kalm::UsageError);
  opt = {};
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_sentencepiece({"bad \xFF"}, opt, out), kalm::FormatError);
  // Too few characters for 8000 pieces: sentencepiece refuses, nothing is written.
  DOCTEST_CHECK_THROWS_AS(kalm::text::train_sentencepiece({"a b c", "b c d"}, opt, out), kalm::FormatError);
  DOCTEST_CHECK(!fs::exists(out));
  DOCTEST_CHECK_THROWS_AS(kalm::text::load_sentencepiece((dir.path / "missing.model").string()), kalm::ModelError);
}
