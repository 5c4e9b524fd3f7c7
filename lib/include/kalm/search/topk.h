#pragma once
// Exact maximum-inner-product search: blocked matrix products and a per-query
// top-k selection (the method of faiss's IndexFlatIP, deterministic).
//
// Shapes: queries [Q, D], corpus [N, D], both 2-D, same D; f32, f16 or bf16
// (computed in f32). The corpus may be a zero-copy view of a memory-mapped
// safetensors file: it is read one block of rows at a time, so memory is
// O(Q·k + block·D + Q_block·block), not O(N·D).
//
// Order and ties: results per query are sorted by score descending, then corpus
// index ascending; among equal scores the lower corpus index wins a place in
// the top k. Identical inputs and thread counts give identical outputs.
//
// Precision: SearchPrecision::F32 multiplies in float32. SearchPrecision::BF16
// and SearchPrecision::Int8 are reduced-precision first passes with an exact
// answer: each query keeps its `candidates` best approximate scores, those are
// rescored in float32, and the result is certified: with a bound e on how far
// any approximate score can be from the float32 one, when the weakest kept
// candidate's approximate score plus e is below the k-th rescored score, no
// row left out can belong to the top k. A query whose certificate fails (dense
// neighbourhoods, unnormalised vectors, non-finite values) is searched again
// in float32. Either way the ids are those of the float32 search, with scores
// equal to it within float32 rounding (the rescoring sums in another order),
// and ties resolved the same way.
//   BF16: the products run in bf16 (2x-7x the f32 GEMM rate on CPUs with AMX
// or AVX512-BF16 on AMD, and on GPUs). With u = 2^-8 (bf16's rounding) and
// gamma = D * 2^-24 (a float32 sum of D products), e = (3u + 8u^2 + 4 gamma)
// * |q| * max|c|.
//   Int8 (CPU only, VNNI int8 dot products): every query and corpus row is
// rounded to int8 with its own scale s = max|x| / 127 (x~ = s * round(x/s),
// residual r = x - x~); the int32 products are exact, so q.c - q~.c~ =
// r_q.c + q~.r_c and e = (|r_q| * max|c| + |q~| * max|r_c| + 2 gamma * |q| *
// max|c| + 2^-22 * |q~| * (max|c| + max|r_c|)) * (1 + 2^-20) (the 2^-22 term:
// the float32 conversion of the products; the last factor: the norms' own
// rounding), norms Euclidean, maxima over the corpus's finite rows. A corpus
// with a non-finite value is searched in float32.
// int8 products at ~4x the f32 GEMM rate in the search's blocks on an Intel
// Xeon with AVX512-VNNI, the search 2.5x faiss there (bench/README.md).
// On a GPU (queries on a CUDA device) the products run there, the corpus is
// uploaded a block at a time (a no-op when it is there already), and every
// query's candidates are selected and merged on the device block by block
// (TopKOptions::select_on_device); only the final ones cross to the host, where
// the bf16 pass rescores them.
//
// Products on the CPU: float32 products go to LibTorch's BLAS (MKL in pip's
// torch), BLIS or OpenBLAS (F32Products below); on AMD CPUs BLIS and OpenBLAS
// multiply 10-15% faster than that MKL (bench/README.md), so `auto` picks one
// of them there. Scores may differ in the last bits between libraries; ids only
// where scores tie that closely.
//
// Thread safety: a pure function; it uses LibTorch's intra-op pool and OpenMP.
// With OpenBLAS's products, searches must not run on several threads at once
// (its OpenMP build is not reentrant), and a float32 search on a GPU turns
// LibTorch's process-wide TF32 setting off while it runs (so that its products
// are float32 where --dtype tf32 allowed TF32): kalm's tools search from one
// thread.
// Throws UsageError on shape/dtype mismatches.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>

namespace kalm::search {

enum class SearchPrecision { F32, BF16, Int8 };

// Which library computes the float32 products of a CPU search.
enum class F32Products {
  Auto,      // KALM_SEARCH_BLAS when set (auto | torch | blis | openblas); else on
             // AMD CPUs BLIS, or OpenBLAS, whichever loads first; LibTorch's BLAS
             // elsewhere and when neither loads
  Torch,     // LibTorch's BLAS (at::mm)
  Blis,      // BLIS's cblas_sgemm, dlopen()ed (libblis.so.4; Debian's OpenMP
             // build preferred); an error when it cannot be loaded
  OpenBlas,  // OpenBLAS's, the same way (libopenblas.so.0)
};

struct TopKOptions {
  std::int64_t k = 10;                // results per query (fewer if N < k)
  // Rows multiplied at once; 0 = measured defaults on a CPU (bench/search):
  // 8192 x 8192 for f32, 4096 corpus x 1024 query rows for bf16 and int8,
  // whose selection then reads a score block that stays in cache; on a GPU 32768
  // corpus x 4096 query rows (chosen by arithmetic, not yet measured there).
  std::int64_t corpus_block = 0;
  std::int64_t query_block = 0;
  SearchPrecision precision = SearchPrecision::F32;
  // BF16 and Int8: approximate candidates kept per query before rescoring;
  // 0 = k + max(k, 128) for bf16, k + max(k, 256) for int8 (its bound is about
  // twice as wide). Fewer make the certificate fail (and the query be
  // searched again in f32) more often; more cost heap work in the first pass.
  std::int64_t candidates = 0;
  F32Products f32_products = F32Products::Auto;  // CPU only; a GPU search uses LibTorch
  // Every query's candidates selected on the search device (torch::topk per
  // block, merged by exact (score, row) keys) so that only the final ones
  // cross to the host. Always so on a GPU; on the CPU only when set (the CPU's
  // own selection is faster there; tests use it to check the GPU's). Not for
  // Int8 (a UsageError), which selects on the host.
  bool select_on_device = false;
  // A selection on the device holds every query's candidates there (12 bytes
  // per candidate) until the corpus has passed: queries are searched in
  // groups whose candidates fit in this many bytes, the corpus passing once
  // per group (a GPU's queries by the million would otherwise fill it).
  std::int64_t device_candidate_bytes = std::int64_t{1} << 30;
};

struct TopKResult {
  torch::Tensor scores;   // [Q, k'] float32, k' = min(k, N)
  torch::Tensor indices;  // [Q, k'] int64 corpus row indices
  // BF16 and Int8: queries whose certificate failed and that were searched in float32.
  std::int64_t exact_fallbacks = 0;
  // BF16 and Int8: rows rescored in float32, over all queries.
  std::int64_t rescored_rows = 0;
  // Who computed the float32 products (never Auto; Torch on a GPU, and when
  // none ran: a bf16 search whose certificates all held).
  F32Products f32_products = F32Products::Torch;
};

// "f32", "bf16", "int8" or "auto" (bf16 where it is faster: a CUDA device, or
// a CPU where bf16_search_pays; else int8 where int8_search_pays; f32
// elsewhere). The answer is the same either way (see above); only the time
// differs. Anything else is a UsageError naming the flag, and so is int8 for a
// device other than the CPU or on a CPU without VNNI (int8_search_runs); auto
// picks int8 only where int8_products_exact as well.
SearchPrecision resolve_search_precision(const std::string& name, const torch::Device& device,
                                         const std::string& flag = "--search-precision");
const char* search_precision_name(SearchPrecision p);
// What a CPU offers for reduced-precision products.
struct CpuProductSupport {
  bool amd = false;          // an AMD CPU
  bool avx512_bf16 = false;  // AVX512-BF16 dot products
  bool amx_bf16 = false;     // AMX-BF16 tiles
  bool avx512_vnni = false;  // AVX512-VNNI int8 dot products
  bool avx_vnni = false;     // AVX-VNNI (256-bit) int8 dot products
  bool amx_int8 = false;     // AMX-INT8 tiles
};
CpuProductSupport cpu_product_support();  // this CPU's (all false off x86-64)
// Whether a bf16 first pass is faster than float32 products on such a CPU:
// with AMX, or with AVX512-BF16 on AMD. AVX512-BF16 alone on an Intel CPU is
// not enough: there bf16 products run slower than float32's (bench/README.md).
bool bf16_search_pays(const CpuProductSupport& cpu);
// Whether the int8 pass can run: its products must be exact, which LibTorch's
// int8 GEMM (oneDNN) guarantees with VNNI or AMX-INT8 dot products; without
// them it sums pairs of products in saturating 16-bit lanes.
bool int8_search_runs(const CpuProductSupport& cpu);
// Whether LibTorch's int8 GEMM gives exact int32 sums in this process: checked
// once (products at the extremes, +-127 everywhere, several shapes, as the
// int8 pass multiplies) and remembered. An int8 search where it does not is
// refused (ModelError), and auto does not pick int8.
bool int8_products_exact();
// Whether an int8 first pass is the fastest exact search on such a CPU where
// bf16's does not pay: with AVX512-VNNI (measured on an Intel Xeon without
// AMX, bench/README.md).
bool int8_search_pays(const CpuProductSupport& cpu);
// What "auto" means on such a CPU: bf16 where it pays, else int8 where it
// pays and runs, else f32.
SearchPrecision auto_search_precision(const CpuProductSupport& cpu);

// While alive, on a CUDA device: cuBLAS multiplies as the search's results and
// the bf16 pass's certificate assume. Float32 products without TF32 (which
// --dtype tf32 allows process-wide: its 10-bit inputs move scores by ~1e-3);
// bf16 products summed in float32, without the reduced-precision split-K
// reductions LibTorch allows by default (outside the certificate's error
// bound). The process's settings come back when it ends. Nothing elsewhere.
class CublasProductsGuard {
 public:
  CublasProductsGuard(const torch::Device& device, torch::ScalarType compute_type);
  ~CublasProductsGuard();
  CublasProductsGuard(const CublasProductsGuard&) = delete;
  CublasProductsGuard& operator=(const CublasProductsGuard&) = delete;

 private:
  bool restore_tf32_ = false;
  bool restore_bf16_reduction_ = false;
  bool bf16_split_k_ = true;
};

// "auto", "torch", "blis" or "openblas"; anything else is a UsageError naming `what`.
F32Products parse_f32_products(const std::string& name, const std::string& what);
const char* f32_products_name(F32Products p);
// What `requested` means on this machine (never Auto): see F32Products. Throws
// UsageError for a bad KALM_SEARCH_BLAS and ModelError when BLIS or OpenBLAS
// is asked for and cannot be loaded.
F32Products resolve_f32_products(F32Products requested);
// Whether the CPU's vendor string is AuthenticAMD.
bool cpu_is_amd();

// Called after each corpus block with the rows done so far (for progress bars).
using SearchProgress = std::function<void(std::int64_t corpus_rows_done)>;

TopKResult exact_topk(const torch::Tensor& queries, const torch::Tensor& corpus,
                      const TopKOptions& options, const SearchProgress& progress = {});

}  // namespace kalm::search
