// kalm-bench-io: record I/O throughput and memory (bench/README.md, "## io").
//
//   kalm-bench-io generate -o FILE.jsonl.zst [--bytes N] [--seed S] [--level L] [--threads T]
//       Writes realistic training groups (query ~15 words, 1 pos and 7 neg of ~60
//       words, task and type) until N decompressed bytes (default 1e9).
//   kalm-bench-io read FILE [--mode groups|lines|raw]
//       Reads FILE back: as typed TrainingGroups (default), as lines only
//       (decompress + split), or as raw fields. Prints records, bytes, seconds,
//       records/s, MB/s (decompressed, 1 MB = 1e6 bytes) and peak RSS.
//
// Word salad from a fixed vocabulary and a fixed-seed generator, so every run with
// the same flags writes the same bytes.

#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/jsonl.h"

namespace {

// splitmix64: tiny, fast and the same on every platform (std distributions are not).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }

 private:
  std::uint64_t state_;
};

// A vocabulary with a Zipf-like use: short common words, rarer long ones, some
// accented and CJK words, and a little punctuation that needs JSON escapes.
std::vector<std::string> make_vocabulary(Rng& rng) {
  const char* extras[] = {"caf\xC3\xA9", "na\xC3\xAFve", "\xE6\x95\xB0\xE6\x8D\xAE",
                          "\xE6\xA8\xA1\xE5\x9E\x8B", "\"quoted\"", "back\\slash", "tab\there",
                          "Stra\xC3\x9F" "e", "\xD0\xBC\xD0\xB8\xD1\x80"};
  std::vector<std::string> vocab;
  for (const char* e : extras) vocab.emplace_back(e);
  while (vocab.size() < 5000) {
    std::size_t len = 2 + rng.below(4) + rng.below(6) * (vocab.size() % 3 == 0);
    std::string w;
    for (std::size_t i = 0; i < len; ++i) w.push_back(static_cast<char>('a' + rng.below(26)));
    vocab.push_back(std::move(w));
  }
  return vocab;
}

std::string& salad(std::string& out, Rng& rng, const std::vector<std::string>& vocab,
                   std::size_t words) {
  out.clear();
  for (std::size_t i = 0; i < words; ++i) {
    if (i) out.push_back(' ');
    // Squaring skews the choice towards the front of the vocabulary.
    double u = static_cast<double>(rng.next() >> 11) / 9007199254740992.0;
    out += vocab[static_cast<std::size_t>(u * u * static_cast<double>(vocab.size()))];
    if (rng.below(12) == 0) out.push_back(rng.below(2) ? '.' : ',');
  }
  return out;
}

double peak_rss_mb() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

std::string arg_value(int& i, int argc, char** argv) {
  if (i + 1 >= argc) throw kalm::UsageError(std::string(argv[i]) + " needs a value");
  return argv[++i];
}

int generate(int argc, char** argv) {
  std::string out_path;
  double bytes = 1e9;
  std::uint64_t seed = 42;
  kalm::io::OutputOptions options;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-o" || a == "--output") out_path = arg_value(i, argc, argv);
    else if (a == "--bytes") bytes = std::stod(arg_value(i, argc, argv));
    else if (a == "--seed") seed = std::stoull(arg_value(i, argc, argv));
    else if (a == "--level") options.level = std::stoi(arg_value(i, argc, argv));
    else if (a == "--threads") options.threads = std::stoi(arg_value(i, argc, argv));
    else throw kalm::UsageError("generate: unknown argument " + a);
  }
  if (out_path.empty()) throw kalm::UsageError("generate: -o FILE is required");

  auto start = std::chrono::steady_clock::now();
  Rng rng(seed);
  std::vector<std::string> vocab = make_vocabulary(rng);
  const char* types[] = {"retrieval", "retrieval", "retrieval", "sts", "classification",
                         "clustering", "reranking", "pair"};
  kalm::io::JsonlWriter writer(out_path, options);
  kalm::io::TrainingGroup g;
  g.pos.resize(1);
  g.neg.resize(7);
  std::string line;
  double written = 0;
  while (written < bytes) {
    salad(g.query, rng, vocab, 10 + rng.below(11));
    for (auto& p : g.pos) salad(p, rng, vocab, 45 + rng.below(31));
    for (auto& n : g.neg) salad(n, rng, vocab, 45 + rng.below(31));
    std::size_t task = rng.below(40);
    g.task = "bench-task-" + std::to_string(task);
    g.type = kalm::io::parse_task_type(types[task % 8]);
    line.clear();
    kalm::io::append_json(line, g);
    written += static_cast<double>(line.size() + 1);
    writer.write_line(line);
  }
  writer.finish();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("generate: %zu records, %.0f bytes decompressed, %.2f s, %.1f MB/s, level %d, threads %d\n",
              writer.records(), written, secs, written / secs / 1e6, options.level, options.threads);
  return 0;
}

int read(int argc, char** argv) {
  std::string path, mode = "groups";
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mode") mode = arg_value(i, argc, argv);
    else if (path.empty()) path = a;
    else throw kalm::UsageError("read: unknown argument " + a);
  }
  if (path.empty()) throw kalm::UsageError("read: FILE is required");

  auto start = std::chrono::steady_clock::now();
  std::size_t records = 0, bytes = 0, checksum = 0;
  if (mode == "lines") {
    kalm::io::LineReader lines(path);
    std::string_view line;
    while (lines.next(line)) {
      ++records;
      bytes += line.size() + 1;
    }
  } else if (mode == "groups") {
    kalm::io::JsonlReader reader(path);
    kalm::io::TrainingGroup g;
    while (reader.next(g)) {
      ++records;
      bytes += reader.line().size() + 1;
      checksum += g.query.size() + g.pos[0].size() + g.neg.size();
    }
  } else if (mode == "raw") {
    kalm::io::JsonlReader reader(path);
    kalm::io::RawFields f;
    while (reader.next(f)) {
      ++records;
      bytes += reader.line().size() + 1;
      checksum += f.size();
    }
  } else {
    throw kalm::UsageError("read: --mode must be groups, lines or raw");
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("read %s: %zu records, %zu bytes decompressed, %.3f s, %.0f records/s, %.1f MB/s, "
              "peak RSS %.1f MB (checksum %zu)\n",
              mode.c_str(), records, bytes, secs, records / secs, bytes / secs / 1e6, peak_rss_mb(),
              checksum);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "generate") return generate(argc, argv);
    if (cmd == "read") return read(argc, argv);
    throw kalm::UsageError("usage: kalm-bench-io generate -o FILE [--bytes N] [--seed S] "
                           "[--level L] [--threads T] | read FILE [--mode groups|lines|raw]");
  } catch (const kalm::UsageError& e) {
    std::fprintf(stderr, "kalm-bench-io: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kalm-bench-io: error: %s\n", e.what());
    return 1;
  }
}
