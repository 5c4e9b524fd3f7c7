#include "kalm/search/topk.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <exception>
#include <vector>

#include <c10/util/BFloat16.h>

#include "kalm/error.h"
#include "cblas.h"
#include "kalm/search/scan.h"

namespace kalm::search {
namespace {

// A fixed-capacity min-heap of (score, index) candidates for one query. The
// root is the weakest kept candidate: lowest score, and among equal scores the
// highest index. Corpus rows arrive in increasing index order, so a newcomer
// with a score equal to the root's has a higher index and correctly loses.
struct Candidate {
  float score;
  std::int64_t index;
};
// The heap comparator: a ranks above b in the final order. With it, the heap's
// front is the weakest candidate and sort_heap puts the best first.
inline bool ranks_above(const Candidate& a, const Candidate& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

void check_matrix(const torch::Tensor& t, const char* what) {
  if (t.dim() != 2)
    throw UsageError(std::string(what) + " must be a 2-D matrix, got " + std::to_string(t.dim()) + " dimensions");
  auto st = t.scalar_type();
  if (st != torch::kFloat32 && st != torch::kFloat16 && st != torch::kBFloat16)
    throw UsageError(std::string(what) + " must be f32, f16 or bf16, got " + std::string(c10::toString(st)));
}


// The score types a block's product is read in.
inline float as_float(float v) { return v; }
inline float as_float(c10::BFloat16 v) { return static_cast<float>(v); }

// The first score of a group that may hold one above `floor` (scan.h).
inline std::int64_t next_group_above(const float* row, std::int64_t from, std::int64_t width, float floor) {
  return detail::scan_kernel().f32(row, from, width, floor);
}
inline std::int64_t next_group_above(const c10::BFloat16* row, std::int64_t from, std::int64_t width,
                                     float floor) {
  return detail::scan_kernel().bf16(reinterpret_cast<const std::uint16_t*>(row), from, width, floor);
}

// One query's candidates while the corpus streams past: those that may still
// be among its `cap` best. Once `cap` are held, a newcomer is kept only when it
// scores strictly above the floor, the cap-th best at the last cut (rows arrive
// in increasing index order, so an equal score loses to the floor); when 2·cap
// are held they are cut back to the cap best. An append is O(1) and a cut
// O(cap), where a heap pays O(log cap) per entry: with the bf16 pass's ~140
// candidates a query, entries are frequent enough for that to matter.
struct Selection {
  std::vector<Candidate> kept;
  float floor = -std::numeric_limits<float>::infinity();

  void cut(std::size_t cap) {
    std::nth_element(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(cap - 1), kept.end(), ranks_above);
    kept.resize(cap);
    floor = kept[cap - 1].score;  // the weakest kept: every dropped one ranked below it
  }
  // The cap best as a heap under ranks_above (front: the weakest).
  std::vector<Candidate> finish(std::size_t cap) {
    if (kept.size() > cap) cut(cap);
    std::make_heap(kept.begin(), kept.end(), ranks_above);
    return std::move(kept);
  }
};

// Offers one query's scores for corpus rows base .. base+width-1. Until `cap`
// candidates are held every row enters (NaN as -inf, below every number);
// after that a vector scan skips the groups with no score above the floor.
template <typename T>
void offer_row(Selection& sel, std::size_t cap, const T* row, std::int64_t width, std::int64_t base) {
  std::int64_t j = 0;
  if (sel.kept.size() < cap) {
    for (; j < width && sel.kept.size() < cap; ++j) {
      float v = as_float(row[j]);
      if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
      sel.kept.push_back({v, base + j});
    }
    if (sel.kept.size() < cap) return;
    sel.cut(cap);  // sets the floor
  }
  while (j < width) {
    j = next_group_above(row, j, width, sel.floor);
    const std::int64_t end = std::min(width, j + detail::kScanGroup);
    for (; j < end; ++j) {
      const float v = as_float(row[j]);
      if (v > sel.floor) {  // false for NaN
        sel.kept.push_back({v, base + j});
        if (sel.kept.size() == 2 * cap) sel.cut(cap);
      }
    }
  }
}

// Runs `body(q)` for q in [begin, end) on OpenMP threads; the first exception
// thrown in any of them is rethrown here.
template <typename Body>
void parallel_queries(std::int64_t begin, std::int64_t end, const Body& body) {
  std::exception_ptr failure;
#pragma omp parallel for schedule(static)
  for (std::int64_t q = begin; q < end; ++q) {
    try {
      body(q);
    } catch (...) {
#pragma omp critical
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

// The first pass: every query's `cap` best corpus rows by the product of
// `queries` (already in `compute_type`, on the search device) and the corpus
// converted block by block. `on_block` sees each converted corpus block (the
// BF16 pass measures its row norms there).
std::vector<std::vector<Candidate>> blocked_candidates(
    const torch::Tensor& queries, const torch::Tensor& corpus, std::int64_t cap, const TopKOptions& options,
    torch::ScalarType compute_type, const SearchProgress& progress,
    const std::function<void(const torch::Tensor& block_f32_or_native)>& on_block) {
  const std::int64_t num_queries = queries.size(0);
  const std::int64_t num_corpus = corpus.size(0);
  const auto device = queries.device();
  std::vector<Selection> selections(static_cast<std::size_t>(num_queries));
  const std::size_t heap_cap = static_cast<std::size_t>(cap);
  // The host's selection appends up to 2 x cap candidates per query before
  // cutting back; a selection on the device hands over at most cap at the end.
  const bool selected_on_host = device.is_cpu() && !options.select_on_device;
  for (auto& sel : selections) sel.kept.reserve(selected_on_host ? 2 * heap_cap : heap_cap);

  // BLIS or OpenBLAS multiplies float32 blocks on the CPU when chosen
  // (exact_topk resolved the choice and loaded the library), on as many threads
  // as LibTorch's pool.
  const detail::Cblas* sgemm = nullptr;
  if (compute_type == torch::kFloat32 && device.is_cpu() && options.f32_products != F32Products::Torch) {
    if (options.f32_products == F32Products::Auto) throw InternalError("search products not resolved");
    sgemm = detail::cblas(options.f32_products == F32Products::Blis ? detail::CblasLibrary::Blis
                                                                     : detail::CblasLibrary::OpenBlas);
    if (!sgemm) throw InternalError("a BLAS chosen for the search products is not loaded");
    sgemm->set_threads(at::get_num_threads());
  }
  const CublasProductsGuard exact_products(device, compute_type);
  // On a GPU every query's candidates stay on the device until the corpus has
  // passed; only the final ones cross to the host.
  const bool select_on_device = !device.is_cpu() || options.select_on_device;
  if (select_on_device && num_corpus >= (std::int64_t{1} << 32))
    throw UsageError("a corpus of 2^32 rows or more is searched on the CPU only");
  // Queries searched per pass of the corpus: all of them on the host; on the
  // device as many whole query blocks as device_candidate_bytes holds.
  std::int64_t group_rows = num_queries;
  if (select_on_device) {
    constexpr std::int64_t kCandidateBytes = sizeof(float) + sizeof(std::int64_t);
    const std::int64_t block_bytes = kCandidateBytes * std::max<std::int64_t>(cap, 1) * options.query_block;
    const std::int64_t blocks = std::max<std::int64_t>(1, options.device_candidate_bytes / block_bytes);
    group_rows = std::min(num_queries, blocks * options.query_block);
  }
  const std::int64_t groups = num_queries == 0 ? 1 : (num_queries + group_rows - 1) / group_rows;
  torch::Tensor score_buffer, block_buffer;
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t g0 = g * group_rows, g1 = std::min(num_queries, g0 + group_rows);
    // One pair of [rows, <= cap] tensors (scores, corpus rows) per query block
    // of the group, merged with each corpus block's best.
    std::vector<std::pair<torch::Tensor, torch::Tensor>> on_device(
        select_on_device ? static_cast<std::size_t>((g1 - g0 + options.query_block - 1) / options.query_block) : 0);
    for (std::int64_t c0 = 0; c0 < num_corpus; c0 += options.corpus_block) {
      const std::int64_t c1 = std::min(num_corpus, c0 + options.corpus_block);
      torch::Tensor source = corpus.slice(0, c0, c1).to(device);
      if (on_block && g == 0) on_block(source);
      // A converted block goes to one buffer reused for every block: a fresh
      // tensor per block costs its page faults every time.
      torch::Tensor block = source;
      if (source.scalar_type() != compute_type || !source.is_contiguous()) {
        if (!block_buffer.defined() || block_buffer.numel() < source.numel())
          block_buffer = torch::empty({source.numel()}, torch::TensorOptions().dtype(compute_type).device(device));
        block = block_buffer.narrow(0, 0, source.numel()).view(source.sizes());
        block.copy_(source);
      }
      for (std::int64_t q0 = g0; q0 < g1; q0 += options.query_block) {
        const std::int64_t q1 = std::min(g1, q0 + options.query_block);
        torch::Tensor qblock = queries.slice(0, q0, q1);
        // One score buffer reused for every block: a fresh [Qb, Cb] tensor per
        // product costs its page faults every time (about 10% of the search).
        const std::int64_t rows = q1 - q0, width = c1 - c0;
        if (!score_buffer.defined() || score_buffer.numel() < rows * width)
          score_buffer = torch::empty({rows * width}, torch::TensorOptions().dtype(compute_type).device(device));
        torch::Tensor scores_view = score_buffer.narrow(0, 0, rows * width).view({rows, width});
        if (sgemm && qblock.size(1) > 0) {  // BLAS refuses leading dimensions of 0
          sgemm->sgemm(detail::kCblasRowMajor, detail::kCblasNoTrans, detail::kCblasTrans, static_cast<int>(rows),
                       static_cast<int>(width), static_cast<int>(qblock.size(1)), 1.0f, qblock.data_ptr<float>(),
                       static_cast<int>(qblock.stride(0)), block.data_ptr<float>(), static_cast<int>(block.stride(0)),
                       0.0f, scores_view.data_ptr<float>(), static_cast<int>(width));
        } else {
          torch::mm_out(scores_view, qblock, block.t());
        }
        if (select_on_device) {
          detail::BlockTop top = detail::block_top(scores_view, cap);
          auto& [kept_scores, kept_rows] = on_device[static_cast<std::size_t>((q0 - g0) / options.query_block)];
          if (!kept_scores.defined()) {
            kept_scores = top.scores;
            kept_rows = top.columns + c0;
          } else {
            std::tie(kept_scores, kept_rows) =
                detail::merge_top(kept_scores, kept_rows, top.scores, top.columns + c0, cap);
          }
          continue;
        }
        const torch::Tensor& scores = scores_view;  // on the CPU
        if (compute_type == torch::kBFloat16) {
          const auto* s = scores.data_ptr<c10::BFloat16>();
          parallel_queries(q0, q1, [&](std::int64_t q) {
            offer_row(selections[static_cast<std::size_t>(q)], heap_cap, s + (q - q0) * width, width, c0);
          });
        } else {
          const float* s = scores.data_ptr<float>();
          parallel_queries(q0, q1, [&](std::int64_t q) {
            offer_row(selections[static_cast<std::size_t>(q)], heap_cap, s + (q - q0) * width, width, c0);
          });
        }
      }
      // Corpus rows done, counting each group's pass as 1/groups of the search.
      if (progress) progress((g * num_corpus + c1) / groups);
    }
    for (std::size_t b = 0; b < on_device.size(); ++b) {
      const auto& [kept_scores, kept_rows] = on_device[b];
      if (!kept_scores.defined()) continue;  // an empty corpus
      const torch::Tensor s = kept_scores.to(torch::kCPU).contiguous();
      const torch::Tensor r = kept_rows.to(torch::kCPU).contiguous();
      const std::int64_t n = s.size(1), q0 = g0 + static_cast<std::int64_t>(b) * options.query_block;
      const float* sp = s.data_ptr<float>();
      const std::int64_t* rp = r.data_ptr<std::int64_t>();
      for (std::int64_t i = 0; i < s.size(0); ++i) {
        auto& kept = selections[static_cast<std::size_t>(q0 + i)].kept;
        for (std::int64_t j = 0; j < n; ++j) kept.push_back({sp[i * n + j], rp[i * n + j]});
      }
    }
  }
  std::vector<std::vector<Candidate>> heaps(static_cast<std::size_t>(num_queries));
  parallel_queries(0, num_queries, [&](std::int64_t q) {
    heaps[static_cast<std::size_t>(q)] = selections[static_cast<std::size_t>(q)].finish(heap_cap);
  });
  return heaps;
}

void write_result(std::vector<std::vector<Candidate>>& heaps, std::int64_t k, TopKResult& result,
                  const std::vector<std::int64_t>* rows = nullptr) {
  float* out_scores = result.scores.data_ptr<float>();
  std::int64_t* out_indices = result.indices.data_ptr<std::int64_t>();
  const auto n = static_cast<std::int64_t>(heaps.size());
  parallel_queries(0, n, [&](std::int64_t i) {
    auto& heap = heaps[static_cast<std::size_t>(i)];
    std::sort_heap(heap.begin(), heap.end(), ranks_above);  // best first
    const std::int64_t q = rows ? (*rows)[static_cast<std::size_t>(i)] : i;
    for (std::int64_t j = 0; j < k; ++j) {
      out_scores[q * k + j] = heap[static_cast<std::size_t>(j)].score;
      out_indices[q * k + j] = heap[static_cast<std::size_t>(j)].index;
    }
  });
}

// A float32 dot product in 16 independent partial sums (vectorised; its
// rounding error, like the GEMM's, is within D * 2^-24 of the sum of |q_i c_i|).
inline float dot_f32(const float* a, const float* b, std::int64_t n) {
  float acc[16] = {};
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int t = 0; t < 16; ++t) acc[t] += a[i + t] * b[i + t];
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  float sum = tail;
  for (float v : acc) sum += v;
  return sum;
}

TopKResult search_f32(const torch::Tensor& queries, const torch::Tensor& corpus, std::int64_t k,
                      const TopKOptions& options, const SearchProgress& progress) {
  const std::int64_t num_queries = queries.size(0);
  TopKResult result{torch::empty({num_queries, k}, torch::kFloat32), torch::empty({num_queries, k}, torch::kInt64)};
  if (num_queries == 0 || k == 0) return result;
  auto heaps = blocked_candidates(queries.to(torch::kFloat32).contiguous(), corpus, k, options, torch::kFloat32,
                                  progress, {});
  write_result(heaps, k, result);
  result.f32_products = queries.device().is_cpu() ? options.f32_products : F32Products::Torch;
  return result;
}

TopKResult search_bf16_rescored(const torch::Tensor& queries, const torch::Tensor& corpus, std::int64_t k,
                                const TopKOptions& options, const SearchProgress& progress) {
  const std::int64_t num_queries = queries.size(0);
  const std::int64_t num_corpus = corpus.size(0);
  const std::int64_t dim = queries.size(1);
  TopKResult result{torch::empty({num_queries, k}, torch::kFloat32), torch::empty({num_queries, k}, torch::kInt64)};
  if (num_queries == 0 || k == 0) return result;
  const std::int64_t cap =
      std::min(num_corpus, options.candidates > 0 ? std::max(options.candidates, k) : k + std::max<std::int64_t>(k, 128));

  // Largest corpus row norm, measured on the blocks as they pass (f32 norms of
  // the stored values, which is what the rescoring multiplies).
  // Kept on the search device and read once at the end: a read per block
  // would make a GPU wait for every block.
  torch::Tensor block_norm_max;
  auto heaps = blocked_candidates(
      queries.to(torch::kBFloat16).contiguous(), corpus, cap, options, torch::kBFloat16, progress,
      [&](const torch::Tensor& block) {
        if (block.size(0) == 0) return;
        // A row with NaN is never a candidate (its scores are NaN), so its
        // norm does not count, as when this maximum was taken on the host.
        const double inf = std::numeric_limits<double>::infinity();
        torch::Tensor m = torch::nan_to_num(block.to(torch::kFloat32).norm(2, 1), 0.0, inf, inf).max();
        block_norm_max = block_norm_max.defined() ? torch::maximum(block_norm_max, m) : m;
      });
  const double corpus_norm_max = block_norm_max.defined() ? block_norm_max.item<double>() : 0.0;

  // Rescoring reads float32 rows on the host: the queries once, corpus rows as
  // candidates name them (a block of the corpus at a time when it is not f32).
  const torch::Tensor q32 = queries.to(torch::kCPU, torch::kFloat32).contiguous();
  const torch::Tensor c_host = corpus.device().is_cpu() ? corpus : corpus.to(torch::kCPU);
  const bool corpus_is_f32 = c_host.scalar_type() == torch::kFloat32 && c_host.stride(1) == 1;
  const torch::Tensor q_norms = q32.norm(2, 1).to(torch::kDouble).contiguous();
  const double u = std::ldexp(1.0, -8);
  const double gamma = static_cast<double>(dim) * std::ldexp(1.0, -24);
  const double rel_bound = 3 * u + 8 * u * u + 4 * gamma;

  std::vector<char> certified(static_cast<std::size_t>(num_queries), 0);
  std::vector<std::vector<Candidate>> exact(static_cast<std::size_t>(num_queries));
  std::vector<std::int64_t> rescored(static_cast<std::size_t>(num_queries), 0);
  const float* qdata = q32.data_ptr<float>();
  const double* qn = q_norms.data_ptr<double>();
  parallel_queries(0, num_queries, [&](std::int64_t q) {
    auto& approx = heaps[static_cast<std::size_t>(q)];
    const float weakest_kept = approx.front().score;  // heap front: the weakest approximate candidate
    std::sort_heap(approx.begin(), approx.end(), ranks_above);  // best approximate first
    const double bound = rel_bound * qn[q] * corpus_norm_max + 1e-30;
    if (!std::isfinite(bound)) return;  // searched again in f32
    auto& top = exact[static_cast<std::size_t>(q)];
    top.reserve(static_cast<std::size_t>(k));
    std::vector<float> row_f32;
    const float* qrow = qdata + q * dim;
    for (const Candidate& cand : approx) {
      // Rows are visited by decreasing approximate score: once one cannot reach
      // the k-th exact score, none after it can.
      if (static_cast<std::int64_t>(top.size()) == k &&
          static_cast<double>(cand.score) + bound < static_cast<double>(top.front().score))
        break;
      const float* crow;
      if (corpus_is_f32) {
        crow = c_host.data_ptr<float>() + cand.index * c_host.stride(0);
      } else {
        torch::Tensor r = c_host[cand.index].to(torch::kFloat32).contiguous();
        row_f32.assign(r.data_ptr<float>(), r.data_ptr<float>() + dim);
        crow = row_f32.data();
      }
      Candidate scored{dot_f32(qrow, crow, dim), cand.index};
      ++rescored[static_cast<std::size_t>(q)];
      if (std::isnan(scored.score)) scored.score = -std::numeric_limits<float>::infinity();
      if (static_cast<std::int64_t>(top.size()) < k) {
        top.push_back(scored);
        std::push_heap(top.begin(), top.end(), ranks_above);
      } else if (ranks_above(scored, top.front())) {
        std::pop_heap(top.begin(), top.end(), ranks_above);
        top.back() = scored;
        std::push_heap(top.begin(), top.end(), ranks_above);
      }
    }
    // Every row not kept scored at most `weakest_kept` approximately, so at
    // most weakest_kept + bound exactly: certified when that is below the k-th.
    const bool all_rows_kept = static_cast<std::int64_t>(approx.size()) == num_corpus;
    certified[static_cast<std::size_t>(q)] =
        static_cast<std::int64_t>(top.size()) == k &&
        (all_rows_kept ||
         static_cast<double>(weakest_kept) + bound < static_cast<double>(top.front().score));
  });

  std::vector<std::int64_t> fallback;
  std::vector<std::vector<Candidate>> done;
  std::vector<std::int64_t> done_rows;
  for (std::int64_t q = 0; q < num_queries; ++q) {
    result.rescored_rows += rescored[static_cast<std::size_t>(q)];
    if (certified[static_cast<std::size_t>(q)]) {
      done.push_back(std::move(exact[static_cast<std::size_t>(q)]));
      done_rows.push_back(q);
    } else {
      fallback.push_back(q);
    }
  }
  write_result(done, k, result, &done_rows);
  result.exact_fallbacks = static_cast<std::int64_t>(fallback.size());
  if (!fallback.empty()) {
    const torch::Tensor rows = torch::tensor(fallback, torch::kInt64);
    TopKResult again = search_f32(queries.index_select(0, rows.to(queries.device())), corpus, k, options, {});
    result.f32_products = again.f32_products;
    result.scores.index_copy_(0, rows, again.scores);
    result.indices.index_copy_(0, rows, again.indices);
  }
  return result;
}

}  // namespace

CpuBf16Support cpu_bf16_support() {
  CpuBf16Support cpu;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  cpu.amd = __builtin_cpu_is("amd");
  cpu.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
  cpu.amx_bf16 = __builtin_cpu_supports("amx-bf16");
#endif
  return cpu;
}

bool bf16_search_pays(const CpuBf16Support& cpu) {
  // Measured (bench/README.md, search): AMX on an Intel Xeon, bf16 pass 3.5-3.8x
  // the float32 search; AVX512-BF16 on an AMD EPYC (Zen 4), 1.7-1.9x; AVX512-BF16
  // without AMX on an Intel Xeon, 0.52x: there bf16 products run at 0.65x the
  // float32 rate, whose AVX-512 FMAs are twice as wide as Zen 4's.
  return cpu.amx_bf16 || (cpu.amd && cpu.avx512_bf16);
}

namespace {

// LibTorch's BF16 reduction setting as (reduced-precision reductions allowed,
// split-K allowed): older LibTorch has a bool, newer an enum of the three
// combinations; read and written through generic code so that both compile.
template <typename Context>
std::pair<bool, bool> bf16_reduction(const Context& context) {
  const auto option = context.allowBF16ReductionCuBLAS();
  if constexpr (std::is_same_v<std::decay_t<decltype(option)>, bool>) {
    return {option, true};
  } else {
    const int value = static_cast<int>(option);  // 0: both allowed, 1: split-K only, 2: neither
    return {value == 0, value != 2};
  }
}
template <typename Context>
void set_bf16_reduction(Context& context, std::pair<bool, bool> allowed) {
  if constexpr (std::is_same_v<std::decay_t<decltype(context.allowBF16ReductionCuBLAS())>, bool>) {
    context.setAllowBF16ReductionCuBLAS(allowed.first);
  } else {
    context.setAllowBF16ReductionCuBLAS(allowed.first, allowed.second);
  }
}

}  // namespace

CublasProductsGuard::CublasProductsGuard(const torch::Device& device, torch::ScalarType compute_type) {
  if (!device.is_cuda()) return;
  auto& context = at::globalContext();
  if (compute_type == torch::kFloat32 && context.allowTF32CuBLAS()) {
    restore_tf32_ = true;
    context.setAllowTF32CuBLAS(false);
  }
  if (compute_type == torch::kBFloat16) {
    const auto allowed = bf16_reduction(context);
    if (allowed.first) {
      restore_bf16_reduction_ = true;
      bf16_split_k_ = allowed.second;
      set_bf16_reduction(context, {false, allowed.second});
    }
  }
}

CublasProductsGuard::~CublasProductsGuard() {
  auto& context = at::globalContext();
  if (restore_tf32_) context.setAllowTF32CuBLAS(true);
  if (restore_bf16_reduction_) set_bf16_reduction(context, {true, bf16_split_k_});
}

SearchPrecision resolve_search_precision(const std::string& name, const torch::Device& device,
                                         const std::string& flag) {
  if (name == "f32") return SearchPrecision::F32;
  if (name == "bf16") return SearchPrecision::BF16;
  if (name == "auto")
    return device.is_cuda() || (device.is_cpu() && bf16_search_pays(cpu_bf16_support())) ? SearchPrecision::BF16
                                                                                          : SearchPrecision::F32;
  throw UsageError(flag + " " + name + ": expected auto, f32 or bf16");
}

const char* search_precision_name(SearchPrecision p) { return p == SearchPrecision::BF16 ? "bf16" : "f32"; }

namespace {
std::optional<F32Products> f32_products_named(const std::string& name) {
  if (name == "auto") return F32Products::Auto;
  if (name == "torch") return F32Products::Torch;
  if (name == "blis") return F32Products::Blis;
  if (name == "openblas") return F32Products::OpenBlas;
  return std::nullopt;
}
}  // namespace

F32Products parse_f32_products(const std::string& name, const std::string& what) {
  if (auto p = f32_products_named(name)) return *p;
  throw UsageError(what + " " + name + ": expected auto, torch, blis or openblas");
}

const char* f32_products_name(F32Products p) {
  switch (p) {
    case F32Products::Auto: return "auto";
    case F32Products::Torch: return "torch";
    case F32Products::Blis: return "blis";
    case F32Products::OpenBlas: return "openblas";
  }
  return "?";
}

bool cpu_is_amd() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_is("amd");
#else
  return false;
#endif
}

F32Products resolve_f32_products(F32Products requested) {
  if (requested == F32Products::Auto) {
    if (const char* env = std::getenv("KALM_SEARCH_BLAS"); env && *env) {
      const auto named = f32_products_named(env);
      if (!named) throw UsageError(std::string("KALM_SEARCH_BLAS=") + env + ": expected auto, torch, blis or openblas");
      requested = *named;
    }
  }
  if (requested == F32Products::Auto) {
    // Measured on a 2-core AMD EPYC (Zen 4), float32 GEMM of the search's
    // shape: BLIS 215, OpenBLAS 206-210, MKL 179-190 GFLOP/s. On Intel Xeons
    // MKL is the one to use (bench/README.md).
    if (!cpu_is_amd()) return F32Products::Torch;
    if (detail::cblas(detail::CblasLibrary::Blis)) return F32Products::Blis;
    if (detail::cblas(detail::CblasLibrary::OpenBlas)) return F32Products::OpenBlas;
    return F32Products::Torch;
  }
  if (requested == F32Products::Blis || requested == F32Products::OpenBlas) {
    std::string why;
    const bool blis = requested == F32Products::Blis;
    if (!detail::cblas(blis ? detail::CblasLibrary::Blis : detail::CblasLibrary::OpenBlas, &why))
      throw ModelError(std::string("the search products were asked of ") + (blis ? "BLIS" : "OpenBLAS") +
                       ", which cannot be loaded: " + why + " (install Debian's " +
                       (blis ? "libblis4-openmp" : "libopenblas0-openmp") + ")");
  }
  return requested;
}

TopKResult exact_topk(const torch::Tensor& queries, const torch::Tensor& corpus, const TopKOptions& options,
                      const SearchProgress& progress) {
  check_matrix(queries, "queries");
  check_matrix(corpus, "corpus");
  if (queries.size(1) != corpus.size(1))
    throw UsageError("queries have dimension " + std::to_string(queries.size(1)) +
                     " but the corpus has " + std::to_string(corpus.size(1)));
  if (options.k < 1) throw UsageError("k must be at least 1");
  if (options.corpus_block < 0 || options.query_block < 0)
    throw UsageError("search block sizes must not be negative");
  if (options.candidates < 0) throw UsageError("search candidates must not be negative");

  torch::NoGradGuard no_grad;
  const std::int64_t k = std::min<std::int64_t>(options.k, corpus.size(0));
  TopKOptions resolved = options;
  const bool bf16 = options.precision == SearchPrecision::BF16;
  if (queries.device().is_cpu()) {
    if (resolved.corpus_block == 0) resolved.corpus_block = bf16 ? 4096 : 8192;
    if (resolved.query_block == 0) resolved.query_block = bf16 ? 1024 : 8192;
  } else {
    // A GPU multiplies a CPU-sized block (4096 x 1024 x 896: 7.5 GFLOP) in
    // tens of microseconds, about what each block's selection waits for the
    // host (the count of tied rows is read back); blocks 32x larger keep the
    // products the bulk of the time. Scores of one block: 4096 x 32768, 0.5 GB
    // in float32, about three times that at the selection's peak.
    if (resolved.corpus_block == 0) resolved.corpus_block = 32768;
    if (resolved.query_block == 0) resolved.query_block = 4096;
  }
  resolved.f32_products =
      queries.device().is_cpu() ? resolve_f32_products(options.f32_products) : F32Products::Torch;
  if (bf16) return search_bf16_rescored(queries, corpus, k, resolved, progress);
  return search_f32(queries, corpus, k, resolved, progress);
}

}  // namespace kalm::search
