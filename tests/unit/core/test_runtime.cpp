// kalm::core::set_flush_denormals: subnormal floats flushed to zero on this
// thread and on LibTorch's intra-op threads, and restored.
#include <doctest/doctest.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <thread>

#include "kalm/core/runtime.h"

namespace {

float subnormal() {
  const std::uint32_t bits = 0x00400000u;  // 2^-127: below FLT_MIN (2^-126)
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Products that give subnormals, computed by LibTorch on its pool (enough
// elements for every intra-op thread to take a share) and on this thread.
std::int64_t pool_nonzero(float operand) {
  return torch::full({1 << 16}, operand).mul(0.5f).ne(0).sum().item<std::int64_t>();
}

}  // namespace

DOCTEST_TEST_CASE("set_flush_denormals: subnormal results and operands become 0 everywhere, and come back") {
#if defined(__x86_64__)
  const int threads_before = at::get_num_threads();
  at::set_num_threads(2);  // the pool's other thread must be set too
  const float min_normal = 1.17549435e-38f;
  volatile float operand = min_normal;
  DOCTEST_REQUIRE(operand * 0.5f != 0.0f);  // IEEE by default
  DOCTEST_REQUIRE(pool_nonzero(min_normal) == (1 << 16));

  DOCTEST_CHECK(kalm::core::set_flush_denormals(true));
  DOCTEST_CHECK(operand * 0.5f == 0.0f);  // flush to zero: a subnormal result
  volatile float tiny = subnormal();
  DOCTEST_CHECK(tiny * 1.0f == 0.0f);     // denormals are zero: a subnormal operand
  DOCTEST_CHECK(pool_nonzero(min_normal) == 0);
  // A thread started afterwards inherits the mode.
  float from_new_thread = -1.0f;
  std::thread([&] { from_new_thread = operand * 0.5f; }).join();
  DOCTEST_CHECK(from_new_thread == 0.0f);

  DOCTEST_CHECK(kalm::core::set_flush_denormals(false));
  DOCTEST_CHECK(operand * 0.5f != 0.0f);
  DOCTEST_CHECK(pool_nonzero(min_normal) == (1 << 16));
  at::set_num_threads(threads_before);
#else
  DOCTEST_MESSAGE("flush-to-zero is checked on x86-64 only");
#endif
}
