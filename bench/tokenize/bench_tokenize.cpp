// Tokenizer throughput on one core: encode every text of a JSONL file ({"text": ...}),
// best of N passes, and print tokens/s plus a checksum of the ids that
// bench_hf.py prints too, so both sides are known to have done the same work.
//
//   kalm-bench-tokenize TOKENIZER TEXTS.jsonl [--passes N] [--special]
//
// TOKENIZER: a tokenizer.json (its tokenizer_config.json beside it is used when
// present) or a model directory.
#include <simdjson.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kalm/text/tokenizer.h"

namespace {

std::vector<std::string> read_texts(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  simdjson::dom::parser parser;
  std::vector<std::string> texts;
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    std::string_view text;
    if (parser.parse(line)["text"].get(text) != simdjson::SUCCESS)
      throw std::runtime_error(path + ":" + std::to_string(n) + ": no \"text\" string");
    texts.emplace_back(text);
  }
  return texts;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 3) {
      std::fprintf(stderr, "usage: kalm-bench-tokenize TOKENIZER TEXTS.jsonl [--passes N] [--special]\n");
      return 2;
    }
    const std::string tok_path = argv[1];
    const std::string texts_path = argv[2];
    int passes = 3;
    bool special = false;
    for (int i = 3; i < argc; ++i) {
      if (std::strcmp(argv[i], "--passes") == 0 && i + 1 < argc) {
        passes = std::max(1, std::atoi(argv[++i]));
      } else if (std::strcmp(argv[i], "--special") == 0) {
        special = true;
      } else {
        std::fprintf(stderr, "kalm-bench-tokenize: unknown argument %s\n", argv[i]);
        return 2;
      }
    }
    namespace fs = std::filesystem;
    const auto t_load0 = std::chrono::steady_clock::now();
    std::unique_ptr<kalm::text::Tokenizer> tok;
    if (fs::is_directory(tok_path)) {
      tok = kalm::text::load_tokenizer(tok_path);
    } else {
      const fs::path config = fs::path(tok_path).parent_path() / "tokenizer_config.json";
      tok = kalm::text::load_hf_tokenizer_json(tok_path, fs::exists(config) ? config.string() : "");
    }
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load0).count();
    const std::vector<std::string> texts = read_texts(texts_path);
    std::size_t bytes = 0;
    for (const auto& t : texts) bytes += t.size();

    const kalm::text::EncodeOptions options{special, std::nullopt};
    double best = 1e300;
    uint64_t tokens = 0, checksum = 0;
    for (int p = 0; p < passes; ++p) {
      tokens = 0;
      checksum = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (const auto& t : texts) {
        const auto e = tok->encode(t, options);
        tokens += e.ids.size();
        for (int32_t id : e.ids) checksum += static_cast<uint64_t>(id);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
    }
    std::printf("kalm: load %.2f s, texts %zu, bytes %zu, tokens %llu, checksum %llu, best of %d: %.3f s, "
                "%.0f tokens/s, %.2f MB/s\n",
                load_s, texts.size(), bytes, static_cast<unsigned long long>(tokens),
                static_cast<unsigned long long>(checksum), passes, best, tokens / best, bytes / best / 1e6);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kalm-bench-tokenize: error: %s\n", e.what());
    return 1;
  }
}
