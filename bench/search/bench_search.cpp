// bench/search: exact top-k with kalm's search engine on random unit vectors.
//   kalm-bench-search gen DIR N Q D        writes DIR/corpus.npy, DIR/queries.npy (f32, seed 0)
//   kalm-bench-search run DIR K            searches, writes DIR/kalm_ids.npy, prints seconds
// run.sh compares with faiss IndexFlatIP on the same files.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "kalm/io/npy.h"
#include "kalm/search/topk.h"

namespace {
torch::Tensor load(const std::string& path) {
  auto arr = kalm::io::read_npy(path);
  auto t = torch::empty({arr.shape[0], arr.shape[1]}, torch::kFloat32);
  std::memcpy(t.data_ptr<float>(), arr.data.data(), arr.data.size());
  return t;
}
void save(const std::string& path, const torch::Tensor& t, const char* descr, std::size_t item) {
  auto c = t.contiguous();
  kalm::io::write_npy(path, descr, {c.size(0), c.size(1)}, c.data_ptr(), item);
}
}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));  // as --threads' default
  if (argc >= 6 && std::string(argv[1]) == "gen") {
    std::string dir = argv[2];
    long n = std::stol(argv[3]), q = std::stol(argv[4]), d = std::stol(argv[5]);
    torch::manual_seed(0);
    auto corpus = torch::nn::functional::normalize(torch::randn({n, d}),
                                                   torch::nn::functional::NormalizeFuncOptions().dim(1));
    auto queries = torch::nn::functional::normalize(torch::randn({q, d}),
                                                    torch::nn::functional::NormalizeFuncOptions().dim(1));
    save(dir + "/corpus.npy", corpus, "<f4", 4);
    save(dir + "/queries.npy", queries, "<f4", 4);
    return 0;
  }
  if (argc >= 4 && std::string(argv[1]) == "run") {
    std::string dir = argv[2];
    kalm::search::TopKOptions opt;
    opt.k = std::stol(argv[3]);
    if (argc >= 6) {  // block sizes, for tuning the defaults
      opt.corpus_block = std::stol(argv[4]);
      opt.query_block = std::stol(argv[5]);
    }
    auto corpus = load(dir + "/corpus.npy");
    auto queries = load(dir + "/queries.npy");
    auto t0 = std::chrono::steady_clock::now();
    auto res = kalm::search::exact_topk(queries, corpus, opt);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    save(dir + "/kalm_ids.npy", res.indices, "<i8", 8);
    save(dir + "/kalm_scores.npy", res.scores, "<f4", 4);
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("kalm_seconds %.3f\nkalm_threads %d\nkalm_peak_rss_mb %.1f\n", secs, at::get_num_threads(),
                ru.ru_maxrss / 1024.0);
    return 0;
  }
  std::fprintf(stderr, "usage: kalm-bench-search gen DIR N Q D | run DIR K\n");
  return 2;
}
