// The search's score scan (kalm/search/scan.h): every kernel this CPU runs
// against the portable one, on rows with NaN, infinities, ties with the floor
// and partial trailing groups.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kalm/search/scan.h"

namespace {
using kalm::search::detail::kScanGroup;

// The reference: the first whole group from `from` with a value above `floor`.
std::int64_t reference(const std::vector<float>& row, std::int64_t from, float floor) {
  const auto width = static_cast<std::int64_t>(row.size());
  std::int64_t j = from;
  for (; j + kScanGroup <= width; j += kScanGroup)
    for (std::int64_t t = 0; t < kScanGroup; ++t)
      if (row[static_cast<std::size_t>(j + t)] > floor) return j;
  return j;
}

std::uint16_t bf16_bits(float v) {  // truncation: the test wants exact bf16 values
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return static_cast<std::uint16_t>(bits >> 16);
}
float from_bf16_bits(std::uint16_t b) {
  std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
}  // namespace

DOCTEST_TEST_CASE("every scan kernel finds the group the reference finds") {
  const auto kernels = kalm::search::detail::runnable_scan_kernels();
  DOCTEST_REQUIRE(!kernels.empty());
  DOCTEST_CHECK(std::string(kernels.back().name) == "portable");
  DOCTEST_CHECK(std::string(kalm::search::detail::scan_kernel().name) == kernels.front().name);
#if defined(__x86_64__)
  DOCTEST_CHECK(kernels.size() >= 3);  // sse2 and portable at least, x86-64's baseline
#endif
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  int cases = 0, hits = 0;
  for (std::int64_t width : {0, 1, 15, 16, 17, 31, 32, 33, 64, 100, 257}) {
    for (int trial = 0; trial < 40; ++trial) {
      std::vector<float> row(static_cast<std::size_t>(width));
      for (auto& v : row) v = from_bf16_bits(bf16_bits(normal(rng) - 2.5f));  // mostly below the floors
      // Specials: NaN (above nothing), -inf, and a value equal to the floor (not above it).
      if (width > 3) {
        row[rng() % row.size()] = nan;
        row[rng() % row.size()] = -inf;
        row[rng() % row.size()] = 0.5f;
      }
      if (width > 0 && trial % 4 == 0) row[rng() % row.size()] = 1.5f;  // one clear hit
      if (width > 0 && trial % 9 == 0) row[rng() % row.size()] = inf;
      std::vector<std::uint16_t> bits(row.size());
      for (std::size_t i = 0; i < row.size(); ++i) bits[i] = bf16_bits(row[i]);
      for (float floor : {0.5f, 1.0f, -inf, inf}) {
        for (std::int64_t from : {std::int64_t{0}, std::int64_t{3}, width / 2}) {
          if (from > width) continue;
          const std::int64_t want = reference(row, from, floor);
          hits += want + kScanGroup <= width;
          ++cases;
          for (const auto& k : kernels) {
            DOCTEST_INFO("kernel " << k.name << " width " << width << " from " << from << " floor " << floor);
            DOCTEST_CHECK(k.f32(row.data(), from, width, floor) == want);
            DOCTEST_CHECK(k.bf16(bits.data(), from, width, floor) == want);
          }
        }
      }
    }
  }
  // The rows exercise both outcomes: groups found and scans run to the end.
  DOCTEST_CHECK(hits > 100);
  DOCTEST_CHECK(cases - hits > 100);
}
