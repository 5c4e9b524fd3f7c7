// bench/search: exact top-k with kalm's search engine on random unit vectors.
//   kalm-bench-search gen DIR N Q D        writes DIR/corpus.npy, DIR/queries.npy (f32, seed 0)
//   kalm-bench-search run DIR K [f32|bf16|int8|auto [CB QB [CANDIDATES]]]
//                                          searches (f32 products, or the certified bf16 first
//                                          pass with f32 rescoring), writes DIR/kalm_ids.npy and
//                                          kalm_scores.npy, prints seconds. KALM_SEARCH_DEVICE=cuda
//                                          puts queries and corpus on that device first (embeddings
//                                          already there) and also times the products alone (the
//                                          same blocks' matrix products, nothing else): the bound.
// run.sh compares with faiss IndexFlatIP on the same files.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <fstream>
#include <sstream>

#include "kalm/io/npy.h"
#include "kalm/io/safetensors.h"
#include "kalm/model/tensor_io.h"
#include "kalm/search/topk.h"

#include <torch/cuda.h>

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
// Resident anonymous memory (kB): what the process itself allocated, without the
// file-backed pages of a memory-mapped corpus, which the kernel may drop anytime.
long rss_anon_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("RssAnon:", 0) == 0) return std::stol(line.substr(8));
  return -1;
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
    if (argc >= 5) opt.precision = kalm::search::resolve_search_precision(argv[4], torch::kCPU, "precision");
    if (argc >= 7) {  // block sizes, for tuning the defaults
      opt.corpus_block = std::stol(argv[5]);
      opt.query_block = std::stol(argv[6]);
    }
    if (argc >= 8) opt.candidates = std::stol(argv[7]);  // bf16/int8 first-pass candidates per query
    auto corpus = load(dir + "/corpus.npy");
    auto queries = load(dir + "/queries.npy");
    const char* device_name = std::getenv("KALM_SEARCH_DEVICE");
    const torch::Device device(device_name && *device_name ? device_name : "cpu");
    if (!device.is_cpu()) {
      corpus = corpus.to(device);
      queries = queries.to(device);
      // Warm-up: the first products load the GPU's kernels and its libraries.
      kalm::search::TopKOptions warm = opt;
      kalm::search::exact_topk(queries.slice(0, 0, 64), corpus.slice(0, 0, 8192), warm);
    }
    auto t0 = std::chrono::steady_clock::now();
    auto res = kalm::search::exact_topk(queries, corpus, opt);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (device.is_cuda()) {
      // The products alone, in the blocks the search uses (its defaults: 8192 x 8192
      // f32, 4096 corpus x 1024 query rows bf16, unless given).
      const bool bf16 = opt.precision == kalm::search::SearchPrecision::BF16;
      const std::int64_t cb = opt.corpus_block ? opt.corpus_block : (bf16 ? 4096 : 8192);
      const std::int64_t qb = opt.query_block ? opt.query_block : (bf16 ? 1024 : 8192);
      const auto type = bf16 ? torch::kBFloat16 : torch::kFloat32;
      auto q = queries.to(type), c = corpus.to(type);
      auto out = torch::empty({qb * cb}, q.options());  // one buffer, as the search reuses one
      torch::cuda::synchronize();
      auto g0 = std::chrono::steady_clock::now();
      for (std::int64_t c0 = 0; c0 < c.size(0); c0 += cb)
        for (std::int64_t q0 = 0; q0 < q.size(0); q0 += qb) {
          auto qs = q.slice(0, q0, std::min(q.size(0), q0 + qb));
          auto cs = c.slice(0, c0, std::min(c.size(0), c0 + cb));
          auto into = out.narrow(0, 0, qs.size(0) * cs.size(0)).view({qs.size(0), cs.size(0)});
          torch::mm_out(into, qs, cs.t());
        }
      torch::cuda::synchronize();
      const double gemm = std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count();
      const double flops = 2.0 * static_cast<double>(q.size(0)) * static_cast<double>(c.size(0)) * q.size(1);
      std::printf("device %s\nproducts_only_seconds %.4f\nproducts_only_tflops %.1f\nsearch_tflops %.1f\n"
                  "search_share_of_products_only %.2f\n",
                  device.str().c_str(), gemm, flops / gemm / 1e12, flops / secs / 1e12, gemm / secs);
    }
    save(dir + "/kalm_ids.npy", res.indices, "<i8", 8);
    save(dir + "/kalm_scores.npy", res.scores, "<f4", 4);
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("kalm_precision %s\nkalm_seconds %.3f\nkalm_threads %d\nkalm_peak_rss_mb %.1f\n",
                kalm::search::search_precision_name(opt.precision), secs, at::get_num_threads(), ru.ru_maxrss / 1024.0);
    std::printf("kalm_f32_products %s\n", kalm::search::f32_products_name(res.f32_products));
    if (opt.precision != kalm::search::SearchPrecision::F32)
      std::printf("kalm_rescored_rows_per_query %.1f\nkalm_exact_fallbacks %lld\n",
                  static_cast<double>(res.rescored_rows) / std::max<std::int64_t>(1, queries.size(0)),
                  static_cast<long long>(res.exact_fallbacks));
    return 0;
  }
  if (argc >= 5 && std::string(argv[1]) == "gen-st") {  // gen-st FILE N D: corpus as safetensors
    std::string path = argv[2];
    long n = std::stol(argv[3]), d = std::stol(argv[4]);
    torch::manual_seed(1);
    auto corpus = torch::nn::functional::normalize(torch::randn({n, d}),
                                                   torch::nn::functional::NormalizeFuncOptions().dim(1));
    kalm::model::save_safetensors(path, {{"embeddings", corpus}});
    return 0;
  }
  if (argc >= 5 && std::string(argv[1]) == "run-st") {  // run-st CORPUS.safetensors QUERIES.npy K
    auto file = kalm::io::SafetensorsFile::open(argv[2]);
    torch::Tensor corpus = kalm::model::tensor_from(file, "embeddings");  // zero-copy, memory-mapped
    torch::Tensor queries = load(argv[3]);
    kalm::search::TopKOptions opt;
    opt.k = std::stol(argv[4]);
    long peak_anon = rss_anon_kb();
    auto t0 = std::chrono::steady_clock::now();
    auto res = kalm::search::exact_topk(queries, corpus, opt, [&](std::int64_t) {
      peak_anon = std::max(peak_anon, rss_anon_kb());
    });
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("mmap_corpus_rows %lld\nmmap_corpus_mb %.1f\nkalm_seconds %.3f\npeak_rss_mb %.1f\npeak_rss_anon_mb %.1f\n",
                static_cast<long long>(corpus.size(0)), corpus.numel() * 4 / 1048576.0, secs, ru.ru_maxrss / 1024.0,
                peak_anon / 1024.0);
    return 0;
  }
  std::fprintf(stderr, "usage: kalm-bench-search gen DIR N Q D | run DIR K [f32|bf16|int8|auto [CB QB [CANDIDATES]]] | gen-st FILE N D | run-st FILE QUERIES.npy K\n");
  return 2;
}
