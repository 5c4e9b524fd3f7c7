#include "kalm/search/scan.h"

#include <cstring>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KALM_SCAN_X86 1
#endif

namespace kalm::search::detail {
namespace {

float bf16_bits_to_float(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float v;
  std::memcpy(&v, &wide, sizeof v);
  return v;
}

std::int64_t portable_f32(const float* row, std::int64_t j, std::int64_t width, float floor) {
  for (; j + kScanGroup <= width; j += kScanGroup)
    for (std::int64_t t = 0; t < kScanGroup; ++t)
      if (row[j + t] > floor) return j;
  return j;
}

std::int64_t portable_bf16(const std::uint16_t* row, std::int64_t j, std::int64_t width, float floor) {
  for (; j + kScanGroup <= width; j += kScanGroup)
    for (std::int64_t t = 0; t < kScanGroup; ++t)
      if (bf16_bits_to_float(row[j + t]) > floor) return j;
  return j;
}

std::int64_t portable_i32_scaled(const std::int32_t* row, const float* scale, std::int64_t j, std::int64_t width,
                                 float floor) {
  for (; j + kScanGroup <= width; j += kScanGroup)
    for (std::int64_t t = 0; t < kScanGroup; ++t)
      if (static_cast<float>(row[j + t]) * scale[j + t] > floor) return j;
  return j;
}

#ifdef KALM_SCAN_X86
// The comparisons are ordered and quiet (_CMP_GT_OQ, cmpgtps): false for NaN.
// bf16 becomes float32 by interleaving zero halves below the bf16 ones; the
// lanes come out in another order, which a test for "any" does not mind.

std::int64_t sse2_f32(const float* row, std::int64_t j, std::int64_t width, float floor) {
  const __m128 f = _mm_set1_ps(floor);
  for (; j + kScanGroup <= width; j += kScanGroup) {
    __m128 a = _mm_cmpgt_ps(_mm_loadu_ps(row + j), f);
    __m128 b = _mm_cmpgt_ps(_mm_loadu_ps(row + j + 4), f);
    __m128 c = _mm_cmpgt_ps(_mm_loadu_ps(row + j + 8), f);
    __m128 d = _mm_cmpgt_ps(_mm_loadu_ps(row + j + 12), f);
    if (_mm_movemask_ps(_mm_or_ps(_mm_or_ps(a, b), _mm_or_ps(c, d)))) return j;
  }
  return j;
}

std::int64_t sse2_bf16(const std::uint16_t* row, std::int64_t j, std::int64_t width, float floor) {
  const __m128 f = _mm_set1_ps(floor);
  const __m128i zero = _mm_setzero_si128();
  for (; j + kScanGroup <= width; j += kScanGroup) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j + 8));
    __m128 a = _mm_cmpgt_ps(_mm_castsi128_ps(_mm_unpacklo_epi16(zero, lo)), f);
    __m128 b = _mm_cmpgt_ps(_mm_castsi128_ps(_mm_unpackhi_epi16(zero, lo)), f);
    __m128 c = _mm_cmpgt_ps(_mm_castsi128_ps(_mm_unpacklo_epi16(zero, hi)), f);
    __m128 d = _mm_cmpgt_ps(_mm_castsi128_ps(_mm_unpackhi_epi16(zero, hi)), f);
    if (_mm_movemask_ps(_mm_or_ps(_mm_or_ps(a, b), _mm_or_ps(c, d)))) return j;
  }
  return j;
}

// int32 to float32 conversion (cvtdq2ps) rounds to nearest as the scalar cast
// does, and the product is a single rounding either way: the same floats.
std::int64_t sse2_i32_scaled(const std::int32_t* row, const float* scale, std::int64_t j, std::int64_t width,
                             float floor) {
  const __m128 f = _mm_set1_ps(floor);
  for (; j + kScanGroup <= width; j += kScanGroup) {
    __m128 any = _mm_setzero_ps();
    for (int t = 0; t < kScanGroup; t += 4) {
      const __m128 v = _mm_cvtepi32_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j + t)));
      any = _mm_or_ps(any, _mm_cmpgt_ps(_mm_mul_ps(v, _mm_loadu_ps(scale + j + t)), f));
    }
    if (_mm_movemask_ps(any)) return j;
  }
  return j;
}

__attribute__((target("avx2"))) std::int64_t avx2_f32(const float* row, std::int64_t j, std::int64_t width,
                                                       float floor) {
  const __m256 f = _mm256_set1_ps(floor);
  for (; j + kScanGroup <= width; j += kScanGroup) {
    __m256 a = _mm256_cmp_ps(_mm256_loadu_ps(row + j), f, _CMP_GT_OQ);
    __m256 b = _mm256_cmp_ps(_mm256_loadu_ps(row + j + 8), f, _CMP_GT_OQ);
    if (_mm256_movemask_ps(_mm256_or_ps(a, b))) return j;
  }
  return j;
}

__attribute__((target("avx2"))) std::int64_t avx2_bf16(const std::uint16_t* row, std::int64_t j,
                                                        std::int64_t width, float floor) {
  const __m256 f = _mm256_set1_ps(floor);
  const __m256i zero = _mm256_setzero_si256();
  for (; j + kScanGroup <= width; j += kScanGroup) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j));
    __m256 a = _mm256_cmp_ps(_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, h)), f, _CMP_GT_OQ);
    __m256 b = _mm256_cmp_ps(_mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, h)), f, _CMP_GT_OQ);
    if (_mm256_movemask_ps(_mm256_or_ps(a, b))) return j;
  }
  return j;
}

__attribute__((target("avx2"))) std::int64_t avx2_i32_scaled(const std::int32_t* row, const float* scale,
                                                              std::int64_t j, std::int64_t width, float floor) {
  const __m256 f = _mm256_set1_ps(floor);
  for (; j + kScanGroup <= width; j += kScanGroup) {
    const __m256 a = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j))),
                                   _mm256_loadu_ps(scale + j));
    const __m256 b =
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j + 8))),
                      _mm256_loadu_ps(scale + j + 8));
    if (_mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(a, f, _CMP_GT_OQ), _mm256_cmp_ps(b, f, _CMP_GT_OQ)))) return j;
  }
  return j;
}

__attribute__((target("avx512f,avx512bw"))) std::int64_t avx512_f32(const float* row, std::int64_t j,
                                                                     std::int64_t width, float floor) {
  const __m512 f = _mm512_set1_ps(floor);
  for (; j + kScanGroup <= width; j += kScanGroup)
    if (_mm512_cmp_ps_mask(_mm512_loadu_ps(row + j), f, _CMP_GT_OQ)) return j;
  return j;
}

__attribute__((target("avx512f,avx512bw"))) std::int64_t avx512_bf16(const std::uint16_t* row, std::int64_t j,
                                                                      std::int64_t width, float floor) {
  const __m512 f = _mm512_set1_ps(floor);
  for (; j + kScanGroup <= width; j += kScanGroup) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j));
    const __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    if (_mm512_cmp_ps_mask(v, f, _CMP_GT_OQ)) return j;
  }
  return j;
}

__attribute__((target("avx512f,avx512bw"))) std::int64_t avx512_i32_scaled(const std::int32_t* row,
                                                                            const float* scale, std::int64_t j,
                                                                            std::int64_t width, float floor) {
  const __m512 f = _mm512_set1_ps(floor);
  for (; j + kScanGroup <= width; j += kScanGroup) {
    const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(row + j)), _mm512_loadu_ps(scale + j));
    if (_mm512_cmp_ps_mask(v, f, _CMP_GT_OQ)) return j;
  }
  return j;
}
#endif

}  // namespace

torch::Tensor order_keys(const torch::Tensor& scores, const torch::Tensor& indices) {
  // Negative floats have their magnitude bits flipped so that the int32 order
  // is the float order; adding 0.0 first turns -0 into +0, which compares equal.
  torch::Tensor bits = (scores + 0.0).view(torch::kInt32).to(torch::kInt64);
  torch::Tensor ordered = torch::where(bits < 0, bits.bitwise_xor(0x7FFFFFFF), bits);
  constexpr std::int64_t kShift = std::int64_t{1} << 32;
  return ordered * kShift + ((kShift - 1) - indices);
}

std::pair<torch::Tensor, torch::Tensor> merge_top(const torch::Tensor& scores_a, const torch::Tensor& indices_a,
                                                  const torch::Tensor& scores_b, const torch::Tensor& indices_b,
                                                  std::int64_t c) {
  torch::Tensor scores = torch::cat({scores_a, scores_b}, 1);
  torch::Tensor indices = torch::cat({indices_a, indices_b}, 1);
  c = std::min(c, scores.size(1));
  if (scores.size(0) == 0 || c == scores.size(1)) return {scores, indices};
  torch::Tensor pick = std::get<1>(order_keys(scores, indices).topk(c, 1, /*largest=*/true, /*sorted=*/false));
  return {scores.gather(1, pick), indices.gather(1, pick)};
}

BlockTop block_top(const torch::Tensor& scores_in, std::int64_t c) {
  const std::int64_t rows = scores_in.size(0), width = scores_in.size(1);
  c = std::min(c, width);
  const double inf = std::numeric_limits<double>::infinity();
  // NaN ranks below every number, as -inf does on the host (torch::topk would
  // put it first); +inf stays +inf.
  torch::Tensor scores = torch::nan_to_num(scores_in.to(torch::kFloat32), -inf, inf, -inf);
  BlockTop out;
  if (rows == 0 || c == 0) {
    out.scores = torch::empty({rows, c}, scores.options());
    out.columns = torch::empty({rows, c}, scores.options().dtype(torch::kInt64));
    return out;
  }
  auto [values, columns] = scores.topk(c, 1, /*largest=*/true, /*sorted=*/false);
  // A row needs its ties settled when more of its scores reach its c-th score
  // than were selected: which of the tied ones are kept is the index rule's call.
  torch::Tensor kth = std::get<0>(values.min(1, /*keepdim=*/true));
  torch::Tensor tied = (scores >= kth).sum(1) > c;
  torch::Tensor tied_rows = tied.nonzero().flatten();
  out.tied_rows = tied_rows.size(0);  // one device-to-host read per block
  if (out.tied_rows > 0) {
    const torch::Tensor tied_scores = scores.index_select(0, tied_rows);
    torch::Tensor col = torch::arange(width, scores.options().dtype(torch::kInt64)).expand({out.tied_rows, width});
    torch::Tensor exact_columns =
        std::get<1>(order_keys(tied_scores, col).topk(c, 1, /*largest=*/true, /*sorted=*/false));
    columns.index_copy_(0, tied_rows, exact_columns);
    values.index_copy_(0, tied_rows, tied_scores.gather(1, exact_columns));
  }
  out.scores = values;
  out.columns = columns;
  return out;
}

std::vector<ScanKernel> runnable_scan_kernels() {
  std::vector<ScanKernel> out;
#ifdef KALM_SCAN_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    out.push_back({"avx512", avx512_f32, avx512_bf16, avx512_i32_scaled});
  if (__builtin_cpu_supports("avx2")) out.push_back({"avx2", avx2_f32, avx2_bf16, avx2_i32_scaled});
  out.push_back({"sse2", sse2_f32, sse2_bf16, sse2_i32_scaled});
#endif
  out.push_back({"portable", portable_f32, portable_bf16, portable_i32_scaled});
  return out;
}

const ScanKernel& scan_kernel() {
  static const ScanKernel widest = runnable_scan_kernels().front();
  return widest;
}

}  // namespace kalm::search::detail
