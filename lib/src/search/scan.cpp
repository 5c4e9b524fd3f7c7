#include "kalm/search/scan.h"

#include <cstring>

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
#endif

}  // namespace

std::vector<ScanKernel> runnable_scan_kernels() {
  std::vector<ScanKernel> out;
#ifdef KALM_SCAN_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    out.push_back({"avx512", avx512_f32, avx512_bf16});
  if (__builtin_cpu_supports("avx2")) out.push_back({"avx2", avx2_f32, avx2_bf16});
  out.push_back({"sse2", sse2_f32, sse2_bf16});
#endif
  out.push_back({"portable", portable_f32, portable_bf16});
  return out;
}

const ScanKernel& scan_kernel() {
  static const ScanKernel widest = runnable_scan_kernels().front();
  return widest;
}

}  // namespace kalm::search::detail
