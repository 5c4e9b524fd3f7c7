// Internal to the search (exposed for its tests): the scan that decides which
// scores of a block may enter a query's candidate list. It reads every score of
// a search, so it has one kernel per vector width (AVX-512, AVX2, SSE2) and a
// portable one, chosen once for the CPU.
#pragma once

#include <cstdint>
#include <vector>

namespace kalm::search::detail {

// Scores are read in groups of kScanGroup.
constexpr std::int64_t kScanGroup = 16;

// From `from`, the start of the first whole group of kScanGroup scores holding
// one strictly above `floor` (NaN is above nothing), or the start of the
// trailing partial group (possibly `width`) when no whole group does.
struct ScanKernel {
  const char* name;
  std::int64_t (*f32)(const float* row, std::int64_t from, std::int64_t width, float floor);
  // bf16 scores given as their bit patterns (the high half of a float32).
  std::int64_t (*bf16)(const std::uint16_t* row, std::int64_t from, std::int64_t width, float floor);
};

// The widest kernel this CPU runs.
const ScanKernel& scan_kernel();
// Every kernel this CPU runs, widest first, the portable one last (for tests).
std::vector<ScanKernel> runnable_scan_kernels();

}  // namespace kalm::search::detail
