// Internal to the search (exposed for its tests): the scan that decides which
// scores of a block may enter a query's candidate list. It reads every score of
// a search, so it has one kernel per vector width (AVX-512, AVX2, SSE2) and a
// portable one, chosen once for the CPU.
#pragma once

#include <torch/torch.h>

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

// A GPU search reduces each block of scores on the device before anything
// crosses to the host: every row's `c` best columns of `scores` ([rows, width],
// f32 or bf16, any device), by the search's order (score descending, then
// column ascending; NaN below every number), returned as float32 scores and
// int64 columns, each row in increasing column order (the order in which the
// host selection wants candidates). torch::topk alone breaks ties at the c-th
// score arbitrarily; rows with such ties are selected again by exact keys.
struct BlockTop {
  torch::Tensor scores;   // [rows, c] float32
  torch::Tensor columns;  // [rows, c] int64
  std::int64_t tied_rows = 0;  // rows whose c-th score was tied and selected by keys
};
BlockTop block_top(const torch::Tensor& scores, std::int64_t c);

}  // namespace kalm::search::detail
