// A CBLAS single-precision GEMM from BLIS or OpenBLAS, loaded at run time for
// the float32 search products. On AMD CPUs both multiply faster than the MKL
// that pip's LibTorch carries (200-215 against 179-190 GFLOP/s on a 2-core AMD
// EPYC, bench/README.md), and exact top-k is one long matrix product. They are
// dlopen()ed, not linked: LibTorch exports MKL's Fortran BLAS symbols (sgemm_,
// dgemm_, ...) and a linked BLAS, whose exports carry the same names, could take
// over LibTorch's own BLAS calls.
#pragma once

#include <cstdint>
#include <string>

namespace kalm::search::detail {

enum class CblasLibrary { Blis, OpenBlas };

struct Cblas {
  // cblas_sgemm, with the CBLAS enums as int and 32-bit BLAS integers (the
  // builds Debian's libblis4 and libopenblas0 are).
  using Sgemm = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc);
  Sgemm sgemm = nullptr;
  std::string path;  // the file loaded
  // Runs the library's products on `threads` threads.
  void set_threads(int threads) const;

  // One of the two is set.
  void (*openblas_set_num_threads)(int) = nullptr;
  void (*bli_thread_set_num_threads)(std::int64_t) = nullptr;  // BLIS's dim_t
};

// The library, loaded once; nullptr when it cannot be loaded (`why` then says why).
const Cblas* cblas(CblasLibrary library, std::string* why = nullptr);

// CBLAS's enum values (cblas.h; fixed by the CBLAS standard).
constexpr int kCblasRowMajor = 101;
constexpr int kCblasNoTrans = 111;
constexpr int kCblasTrans = 112;

}  // namespace kalm::search::detail
