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


// How a block's scores are read by the selection: the value of column j, and
// the start of the first group from `from` that may hold one above `floor`
// (scan.h). The int8 pass's int32 products are read as float(p) * scale of the
// column's corpus row; the query's own scale multiplies every one of its
// scores alike, so the selection leaves it out and the rescoring puts it back.
struct F32Scores {
  const float* row;
  float operator[](std::int64_t j) const { return row[j]; }
  std::int64_t next_group_above(std::int64_t from, std::int64_t width, float floor) const {
    return detail::scan_kernel().f32(row, from, width, floor);
  }
};
struct Bf16Scores {
  const c10::BFloat16* row;
  float operator[](std::int64_t j) const { return static_cast<float>(row[j]); }
  std::int64_t next_group_above(std::int64_t from, std::int64_t width, float floor) const {
    return detail::scan_kernel().bf16(reinterpret_cast<const std::uint16_t*>(row), from, width, floor);
  }
};
struct ScaledInt32Scores {
  const std::int32_t* row;
  const float* scale;
  float operator[](std::int64_t j) const { return static_cast<float>(row[j]) * scale[j]; }
  std::int64_t next_group_above(std::int64_t from, std::int64_t width, float floor) const {
    return detail::scan_kernel().i32_scaled(row, scale, from, width, floor);
  }
};

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
template <typename Scores>
void offer_row(Selection& sel, std::size_t cap, const Scores& row, std::int64_t width, std::int64_t base) {
  std::int64_t j = 0;
  if (sel.kept.size() < cap) {
    for (; j < width && sel.kept.size() < cap; ++j) {
      float v = row[j];
      if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
      sel.kept.push_back({v, base + j});
    }
    if (sel.kept.size() < cap) return;
    sel.cut(cap);  // sets the floor
  }
  while (j < width) {
    j = row.next_group_above(j, width, sel.floor);
    const std::int64_t end = std::min(width, j + detail::kScanGroup);
    for (; j < end; ++j) {
      const float v = row[j];
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

// The int8 pass's rounding of one row x (float32, `dim` values): q = round(x /
// s) with s = max|x| / 127, so q lies in [-127, 127] and x~ = s * q. What the
// certificate needs of the row comes back with it: |x|, |x - x~| and |x~|
// (Euclidean, summed in double from the exact residuals: s * q is exact in
// double). A row with NaN or an infinity is marked and rounded to zeros; an
// all-zero row (or one too small for its scale to be a normal float) gets
// scale 1, its residual then being the row itself.
struct Int8Row {
  float scale = 1.0f;
  double norm = 0, residual_norm = 0, quantized_norm = 0;
  bool finite = true;
};
// Compiled for AVX2, which every CPU the int8 pass runs on has (VNNI came
// after it), so that its loops are vectorised; rounding to the nearest integer
// (ties to even, as nearbyint in the default mode) by adding and subtracting
// 1.5 * 2^23, exact for |v| < 2^22 (here |v / scale| <= 127): nearbyintf is
// a library call per value on x86-64's baseline and keeps the loop scalar.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2")))
#endif
Int8Row round_row_to_int8(const float* x, std::int64_t dim, std::int8_t* out) {
  constexpr float kRoundingShift = 12582912.0f;  // 1.5 * 2^23
  // Sums and maxima in kLanes independent lanes, combined at the end: a single
  // accumulator is a chain the compiler may not reorder into vectors.
  constexpr std::int64_t kLanes = 16;
  Int8Row row;
  float largest_lane[kLanes] = {};
  double norm2_lane[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= dim; j += kLanes)
    for (std::int64_t t = 0; t < kLanes; ++t) {
      const float a = std::fabs(x[j + t]);
      largest_lane[t] = largest_lane[t] < a ? a : largest_lane[t];
      norm2_lane[t] += static_cast<double>(x[j + t]) * x[j + t];  // NaN or infinite when any value is
    }
  for (; j < dim; ++j) {
    const float a = std::fabs(x[j]);
    largest_lane[0] = largest_lane[0] < a ? a : largest_lane[0];
    norm2_lane[0] += static_cast<double>(x[j]) * x[j];
  }
  float largest = 0.0f;
  double norm2 = 0;
  for (std::int64_t t = 0; t < kLanes; ++t) {
    largest = std::max(largest, largest_lane[t]);
    norm2 += norm2_lane[t];
  }
  row.finite = std::isfinite(norm2);
  const float scale = largest / 127.0f;
  if (row.finite && scale >= std::numeric_limits<float>::min()) row.scale = scale;
  // Three simple loops (levels, int8 values, residual sums) rather than one,
  // so that each is vectorised.
  thread_local std::vector<float> levels;
  levels.resize(static_cast<std::size_t>(dim));
  // Plain pointers: through the thread-local vector (which `out` might alias,
  // as far as the compiler knows) every store reloaded its data pointer.
  float* __restrict level = levels.data();
  std::int8_t* __restrict ints = out;
  const float scale_used = row.scale;
  for (std::int64_t i = 0; i < dim; ++i) {
    const float v = row.finite ? x[i] : 0.0f;
    const float rounded = (v / scale_used + kRoundingShift) - kRoundingShift;
    level[i] = rounded > 127.0f ? 127.0f : (rounded < -127.0f ? -127.0f : rounded);
  }
  for (std::int64_t i = 0; i < dim; ++i) ints[i] = static_cast<std::int8_t>(level[i]);
  double residual2_lane[kLanes] = {}, quantized2_lane[kLanes] = {};
  const double scale_wide = scale_used;
  for (j = 0; j + kLanes <= dim; j += kLanes)
    for (std::int64_t t = 0; t < kLanes; ++t) {
      const double rounded = scale_wide * level[j + t];  // exact: 24 by 8 significant bits
      const double residual = (row.finite ? static_cast<double>(x[j + t]) : 0.0) - rounded;
      residual2_lane[t] += residual * residual;
      quantized2_lane[t] += rounded * rounded;
    }
  for (; j < dim; ++j) {
    const double rounded = scale_wide * level[j];
    const double residual = (row.finite ? static_cast<double>(x[j]) : 0.0) - rounded;
    residual2_lane[0] += residual * residual;
    quantized2_lane[0] += rounded * rounded;
  }
  double residual2 = 0, quantized2 = 0;
  for (std::int64_t t = 0; t < kLanes; ++t) {
    residual2 += residual2_lane[t];
    quantized2 += quantized2_lane[t];
  }
  row.norm = std::sqrt(norm2);
  row.residual_norm = std::sqrt(residual2);
  row.quantized_norm = std::sqrt(quantized2);
  return row;
}

// What the int8 pass learns of the corpus as its blocks are rounded: the
// current block's row scales (the selection reads scores through them) and,
// over every row so far, the largest |c| and |c - c~| of finite rows and
// whether any row was not finite.
struct Int8Corpus {
  std::vector<float> scales;
  double max_norm = 0, max_residual_norm = 0;
  bool finite = true;

  // Rounds `block` (float32 on the CPU, rows contiguous) into `out` ([rows, D] int8).
  void round_block(const torch::Tensor& block, torch::Tensor& out) {
    const std::int64_t rows = block.size(0), dim = block.size(1);
    scales.resize(static_cast<std::size_t>(rows));
    std::vector<Int8Row> stats(static_cast<std::size_t>(rows));
    const float* x = block.data_ptr<float>();
    const std::int64_t stride = block.stride(0);
    std::int8_t* q = out.data_ptr<std::int8_t>();
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r)
      stats[static_cast<std::size_t>(r)] = round_row_to_int8(x + r * stride, dim, q + r * dim);
    for (std::int64_t r = 0; r < rows; ++r) {
      const Int8Row& st = stats[static_cast<std::size_t>(r)];
      scales[static_cast<std::size_t>(r)] = st.scale;
      if (!st.finite) {
        finite = false;
        continue;
      }
      max_norm = std::max(max_norm, st.norm);
      max_residual_norm = std::max(max_residual_norm, st.residual_norm);
    }
  }
};

// The first pass: every query's `cap` best corpus rows by the product of
// `queries` (already in `compute_type`, on the search device) and the corpus
// converted block by block. `on_block` sees each corpus block as stored (the
// BF16 pass measures its row norms there). With `int8` (the int8 pass, on the
// CPU: compute_type kChar) each corpus block is rounded to int8 by it, the
// products are exact int32 and the selection reads them through its scales.
std::vector<std::vector<Candidate>> blocked_candidates(
    const torch::Tensor& queries, const torch::Tensor& corpus, std::int64_t cap, const TopKOptions& options,
    torch::ScalarType compute_type, const SearchProgress& progress,
    const std::function<void(const torch::Tensor& block_f32_or_native)>& on_block, Int8Corpus* int8 = nullptr) {
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
  const auto score_type = int8 ? torch::kInt32 : compute_type;
  torch::Tensor score_buffer, block_buffer, block_f32_buffer;
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
      if (int8) {
        torch::Tensor rows_f32 = source;
        if (source.scalar_type() != torch::kFloat32 || source.stride(1) != 1) {
          if (!block_f32_buffer.defined() || block_f32_buffer.numel() < source.numel())
            block_f32_buffer = torch::empty({source.numel()}, torch::kFloat32);
          rows_f32 = block_f32_buffer.narrow(0, 0, source.numel()).view(source.sizes());
          rows_f32.copy_(source);
        }
        if (!block_buffer.defined() || block_buffer.numel() < source.numel())
          block_buffer = torch::empty({source.numel()}, torch::kInt8);
        block = block_buffer.narrow(0, 0, source.numel()).view(source.sizes());
        int8->round_block(rows_f32, block);
      } else if (source.scalar_type() != compute_type || !source.is_contiguous()) {
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
          score_buffer = torch::empty({rows * width}, torch::TensorOptions().dtype(score_type).device(device));
        torch::Tensor scores_view = score_buffer.narrow(0, 0, rows * width).view({rows, width});
        if (int8) {
          detail::int8_products(scores_view, qblock, block);  // exact: |sum| <= 127^2 * D < 2^31
        } else if (sgemm && qblock.size(1) > 0) {  // BLAS refuses leading dimensions of 0
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
        if (int8) {
          const auto* s = scores.data_ptr<std::int32_t>();
          const float* scales = int8->scales.data();
          parallel_queries(q0, q1, [&](std::int64_t q) {
            offer_row(selections[static_cast<std::size_t>(q)], heap_cap,
                      ScaledInt32Scores{s + (q - q0) * width, scales}, width, c0);
          });
        } else if (compute_type == torch::kBFloat16) {
          const auto* s = scores.data_ptr<c10::BFloat16>();
          parallel_queries(q0, q1, [&](std::int64_t q) {
            offer_row(selections[static_cast<std::size_t>(q)], heap_cap, Bf16Scores{s + (q - q0) * width}, width, c0);
          });
        } else {
          const float* s = scores.data_ptr<float>();
          parallel_queries(q0, q1, [&](std::int64_t q) {
            offer_row(selections[static_cast<std::size_t>(q)], heap_cap, F32Scores{s + (q - q0) * width}, width, c0);
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

// The first pass of a reduced-precision search: every query's `cap` best rows
// by approximate score (a heap under ranks_above, the weakest first), each
// kept score times score_scale[q] being the approximate score; and bound[q],
// the most any row's approximate score can differ from its float32 one
// (infinite: the query cannot be certified).
struct FirstPass {
  std::vector<std::vector<Candidate>> heaps;
  std::vector<double> score_scale;
  std::vector<double> bound;
};

// bf16 products (topk.h): e = (3u + 8u^2 + 4 gamma) * |q| * max|c|.
FirstPass bf16_first_pass(const torch::Tensor& queries, const torch::Tensor& q32, const torch::Tensor& corpus,
                          std::int64_t cap, const TopKOptions& options, const SearchProgress& progress) {
  // Largest corpus row norm, measured on the blocks as they pass (f32 norms of
  // the stored values, which is what the rescoring multiplies).
  // Kept on the search device and read once at the end: a read per block
  // would make a GPU wait for every block.
  torch::Tensor block_norm_max;
  FirstPass pass;
  pass.heaps = blocked_candidates(
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
  const double u = std::ldexp(1.0, -8);
  const double gamma = static_cast<double>(q32.size(1)) * std::ldexp(1.0, -24);
  const double rel_bound = 3 * u + 8 * u * u + 4 * gamma;
  const torch::Tensor q_norms = q32.norm(2, 1).to(torch::kDouble).contiguous();
  const double* qn = q_norms.data_ptr<double>();
  const auto num_queries = static_cast<std::size_t>(q32.size(0));
  pass.score_scale.assign(num_queries, 1.0);
  pass.bound.resize(num_queries);
  for (std::size_t q = 0; q < num_queries; ++q) pass.bound[q] = rel_bound * qn[q] * corpus_norm_max + 1e-30;
  return pass;
}

// int8 products on the CPU (topk.h): with r = x - x~ for a query q and a
// corpus row c, q.c - q~.c~ = r_q.c + q~.r_c exactly, so by Cauchy-Schwarz
// |q.c - q~.c~| <= |r_q| * max|c| + |q~| * max|r_c|; the rescoring's float32
// sum is within 2 gamma * |q| * |c| of q.c (gamma = D * 2^-24; 2 for the
// order of its partial sums), and the kept score float(p) * s_c times s_q is
// within 2^-22 * |q~| * |c~| of q~.c~ (two float roundings), |c~| <= max|c| +
// max|r_c|. The sum gets a relative margin of 2^-20 for the norms' own rounding.
FirstPass int8_first_pass(const torch::Tensor& q32, const torch::Tensor& corpus, std::int64_t cap,
                          const TopKOptions& options, const SearchProgress& progress) {
  const std::int64_t num_queries = q32.size(0), dim = q32.size(1);
  torch::Tensor q8 = torch::empty({num_queries, dim}, torch::kInt8);
  std::vector<Int8Row> query_rows(static_cast<std::size_t>(num_queries));
  const float* qdata = q32.data_ptr<float>();
  std::int8_t* q8data = q8.data_ptr<std::int8_t>();
#pragma omp parallel for schedule(static)
  for (std::int64_t q = 0; q < num_queries; ++q)
    query_rows[static_cast<std::size_t>(q)] = round_row_to_int8(qdata + q * dim, dim, q8data + q * dim);
  Int8Corpus corpus_rows;
  FirstPass pass;
  pass.heaps = blocked_candidates(q8, corpus, cap, options, torch::kChar, progress, {}, &corpus_rows);
  const double gamma = static_cast<double>(dim) * std::ldexp(1.0, -24);
  const double c_norm = corpus_rows.max_norm, c_residual = corpus_rows.max_residual_norm;
  pass.score_scale.resize(static_cast<std::size_t>(num_queries));
  pass.bound.resize(static_cast<std::size_t>(num_queries));
  for (std::size_t q = 0; q < query_rows.size(); ++q) {
    const Int8Row& r = query_rows[q];
    pass.score_scale[q] = r.scale;
    pass.bound[q] = !(r.finite && corpus_rows.finite)
                        ? std::numeric_limits<double>::infinity()
                        : (r.residual_norm * c_norm + r.quantized_norm * c_residual + 2 * gamma * r.norm * c_norm +
                           std::ldexp(1.0, -22) * r.quantized_norm * (c_norm + c_residual)) *
                                  (1 + std::ldexp(1.0, -20)) +
                              1e-30;
  }
  return pass;
}

// A reduced-precision first pass (bf16 or int8), its candidates rescored in
// float32 and certified (topk.h); queries not certified searched in float32.
TopKResult search_rescored(const torch::Tensor& queries, const torch::Tensor& corpus, std::int64_t k,
                           const TopKOptions& options, const SearchProgress& progress) {
  const std::int64_t num_queries = queries.size(0);
  const std::int64_t num_corpus = corpus.size(0);
  const std::int64_t dim = queries.size(1);
  const bool int8 = options.precision == SearchPrecision::Int8;
  TopKResult result{torch::empty({num_queries, k}, torch::kFloat32), torch::empty({num_queries, k}, torch::kInt64)};
  if (num_queries == 0 || k == 0) return result;
  const std::int64_t margin = int8 ? 256 : 128;
  const std::int64_t cap = std::min(
      num_corpus, options.candidates > 0 ? std::max(options.candidates, k) : k + std::max<std::int64_t>(k, margin));
  const torch::Tensor q32 = queries.to(torch::kCPU, torch::kFloat32).contiguous();
  FirstPass pass = int8 ? int8_first_pass(q32, corpus, cap, options, progress)
                        : bf16_first_pass(queries, q32, corpus, cap, options, progress);
  auto& heaps = pass.heaps;

  // Rescoring reads float32 rows on the host: the queries once, corpus rows as
  // candidates name them (a block of the corpus at a time when it is not f32).
  const torch::Tensor c_host = corpus.device().is_cpu() ? corpus : corpus.to(torch::kCPU);
  const bool corpus_is_f32 = c_host.scalar_type() == torch::kFloat32 && c_host.stride(1) == 1;

  std::vector<char> certified(static_cast<std::size_t>(num_queries), 0);
  std::vector<std::vector<Candidate>> exact(static_cast<std::size_t>(num_queries));
  std::vector<std::int64_t> rescored(static_cast<std::size_t>(num_queries), 0);
  const float* qdata = q32.data_ptr<float>();
  parallel_queries(0, num_queries, [&](std::int64_t q) {
    auto& approx = heaps[static_cast<std::size_t>(q)];
    const double scale = pass.score_scale[static_cast<std::size_t>(q)];
    // heap front: the weakest approximate candidate
    const double weakest_kept = scale * static_cast<double>(approx.front().score);
    std::sort_heap(approx.begin(), approx.end(), ranks_above);  // best approximate first
    const double bound = pass.bound[static_cast<std::size_t>(q)];
    if (!std::isfinite(bound)) return;  // searched again in f32
    auto& top = exact[static_cast<std::size_t>(q)];
    top.reserve(static_cast<std::size_t>(k));
    std::vector<float> row_f32;
    const float* qrow = qdata + q * dim;
    for (const Candidate& cand : approx) {
      // Rows are visited by decreasing approximate score: once one cannot reach
      // the k-th exact score, none after it can.
      if (static_cast<std::int64_t>(top.size()) == k &&
          scale * static_cast<double>(cand.score) + bound < static_cast<double>(top.front().score))
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
         weakest_kept + bound < static_cast<double>(top.front().score));
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

CpuProductSupport cpu_product_support() {
  CpuProductSupport cpu;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  cpu.amd = __builtin_cpu_is("amd");
  cpu.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
  cpu.amx_bf16 = __builtin_cpu_supports("amx-bf16");
  cpu.avx512_vnni = __builtin_cpu_supports("avx512vnni");
  cpu.avx_vnni = __builtin_cpu_supports("avxvnni");
  cpu.amx_int8 = __builtin_cpu_supports("amx-int8");
#endif
  return cpu;
}

bool bf16_search_pays(const CpuProductSupport& cpu) {
  // Measured (bench/README.md, search): AMX on an Intel Xeon, bf16 pass 3.5-3.8x
  // the float32 search; AVX512-BF16 on an AMD EPYC (Zen 4), 1.7-1.9x; AVX512-BF16
  // without AMX on an Intel Xeon, 0.52x: there bf16 products run at 0.65x the
  // float32 rate, whose AVX-512 FMAs are twice as wide as Zen 4's.
  return cpu.amx_bf16 || (cpu.amd && cpu.avx512_bf16);
}

bool int8_search_runs(const CpuProductSupport& cpu) { return cpu.avx512_vnni || cpu.avx_vnni || cpu.amx_int8; }

void detail::int8_products(torch::Tensor& out, const torch::Tensor& queries, const torch::Tensor& corpus_rows) {
  const std::int64_t n = corpus_rows.size(0), dim = corpus_rows.size(1);
  // [D, N] with strides (1, D): for D = 1 that is [1, N] with strides (1, 1),
  // which LibTorch 2.11 misread; the same values row-major are unambiguous.
  const torch::Tensor rhs = dim == 1 ? corpus_rows.reshape({n}).unsqueeze(0) : corpus_rows.t();
  at::_int_mm_out(out, queries, rhs);
}

bool int8_products_exact() {
  static const bool exact = [] {
    torch::NoGradGuard no_grad;
    for (std::int64_t dim : {1, 2, 7, 64, 896, 4099}) {
      for (auto [rows, cols] : {std::pair<std::int64_t, std::int64_t>{33, 19}, {1, 5}, {5, 1}}) {
        // Every product +-127 * +-127, sums up to 127^2 * D: a GEMM that adds
        // pairs of products in saturating 16-bit lanes gets these wrong.
        torch::Tensor a = torch::full({rows, dim}, 127, torch::kInt8);
        torch::Tensor b = torch::full({cols, dim}, 127, torch::kInt8);
        a.slice(0, 1, rows, 2).fill_(-127);
        b.slice(1, 0, dim, 3).fill_(-127);
        torch::Tensor out = torch::empty({rows, cols}, torch::kInt32);
        detail::int8_products(out, a, b);
        const torch::Tensor want = torch::matmul(a.to(torch::kInt64), b.to(torch::kInt64).t());
        if (!torch::equal(out.to(torch::kInt64), want)) return false;
      }
    }
    return true;
  }();
  return exact;
}

bool int8_search_pays(const CpuProductSupport& cpu) {
  // Measured (bench/README.md, search): AVX512-VNNI on an Intel Xeon without
  // AMX, int8 products at ~4x the float32 rate in the search's blocks.
  return cpu.avx512_vnni;
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

SearchPrecision auto_search_precision(const CpuProductSupport& cpu) {
  if (bf16_search_pays(cpu)) return SearchPrecision::BF16;
  if (int8_search_pays(cpu) && int8_search_runs(cpu)) return SearchPrecision::Int8;
  return SearchPrecision::F32;
}

SearchPrecision resolve_search_precision(const std::string& name, const torch::Device& device,
                                         const std::string& flag) {
  if (name == "f32") return SearchPrecision::F32;
  if (name == "bf16") return SearchPrecision::BF16;
  if (name == "int8") {
    if (!device.is_cpu())
      throw UsageError(flag + " int8 runs on the CPU; a search on " + device.str() + " takes bf16, f32 or auto");
    if (!int8_search_runs(cpu_product_support()))
      throw UsageError(flag + " int8 needs a CPU with VNNI int8 dot products (AVX512-VNNI, AVX-VNNI or AMX), "
                              "which this one lacks; use f32, bf16 or auto");
    return SearchPrecision::Int8;
  }
  if (name == "auto") {
    if (device.is_cuda()) return SearchPrecision::BF16;
    if (!device.is_cpu()) return SearchPrecision::F32;
    const SearchPrecision fastest = auto_search_precision(cpu_product_support());
    return fastest == SearchPrecision::Int8 && !int8_products_exact() ? SearchPrecision::F32 : fastest;
  }
  throw UsageError(flag + " " + name + ": expected auto, f32, bf16 or int8");
}

const char* search_precision_name(SearchPrecision p) {
  switch (p) {
    case SearchPrecision::F32: return "f32";
    case SearchPrecision::BF16: return "bf16";
    case SearchPrecision::Int8: return "int8";
  }
  return "?";
}

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

  if (options.precision == SearchPrecision::Int8) {
    if (!queries.device().is_cpu())
      throw UsageError("the int8 search runs on the CPU; the queries are on " + queries.device().str());
    if (options.select_on_device) throw UsageError("the int8 search selects on the host");
    if (!int8_search_runs(cpu_product_support()))
      throw UsageError("the int8 search needs a CPU with VNNI int8 dot products (AVX512-VNNI, AVX-VNNI or AMX)");
    if (!int8_products_exact())
      throw ModelError("LibTorch's int8 products are not exact on this machine (checked at the extremes): "
                       "search with f32 or bf16");
    // int32 products: |sum of D products| <= 127^2 * D must stay below 2^31.
    if (queries.size(1) > std::numeric_limits<std::int32_t>::max() / (127 * 127))
      throw UsageError("the int8 search takes at most " +
                       std::to_string(std::numeric_limits<std::int32_t>::max() / (127 * 127)) +
                       " dimensions, got " + std::to_string(queries.size(1)));
  }

  torch::NoGradGuard no_grad;
  const std::int64_t k = std::min<std::int64_t>(options.k, corpus.size(0));
  TopKOptions resolved = options;
  const bool reduced = options.precision != SearchPrecision::F32;
  if (queries.device().is_cpu()) {
    if (resolved.corpus_block == 0) resolved.corpus_block = reduced ? 4096 : 8192;
    if (resolved.query_block == 0) resolved.query_block = reduced ? 1024 : 8192;
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
  if (reduced) return search_rescored(queries, corpus, k, resolved, progress);
  return search_f32(queries, corpus, k, resolved, progress);
}

}  // namespace kalm::search
