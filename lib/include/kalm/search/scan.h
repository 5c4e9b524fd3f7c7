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
  // int32 products of the int8 pass, each read as float(row[j]) * scale[j]
  // (the column's corpus-row scale), exactly as the selection computes it.
  std::int64_t (*i32_scaled)(const std::int32_t* row, const float* scale, std::int64_t from, std::int64_t width,
                             float floor);
};

// The widest kernel this CPU runs.
const ScanKernel& scan_kernel();
// Every kernel this CPU runs, widest first, the portable one last (for tests).
std::vector<ScanKernel> runnable_scan_kernels();

// A GPU search keeps every query's candidates on the device and only the final
// ones cross to the host. block_top reduces a block of scores ([rows, width],
// f32 or bf16, any device) to every row's `c` best columns by the search's
// order (score descending, then column ascending; NaN below every number), as
// float32 scores and int64 columns in no particular order. torch::topk alone
// breaks ties at the c-th score arbitrarily; rows with such ties are selected
// again by exact keys (order_keys).
struct BlockTop {
  torch::Tensor scores;   // [rows, c] float32, NaN made -inf
  torch::Tensor columns;  // [rows, c] int64
  std::int64_t tied_rows = 0;  // rows whose c-th score was tied and selected by keys
};
BlockTop block_top(const torch::Tensor& scores, std::int64_t c);

// int64 keys that order (score, index) pairs as the search does: a larger key
// ranks higher (score's order-preserving bits times 2^32, plus 2^32-1-index, so
// the lower index wins among equal scores; -0 counts as +0). Scores float32
// without NaN; indices in [0, 2^32).
torch::Tensor order_keys(const torch::Tensor& scores, const torch::Tensor& indices);

// The `c` best of two candidate lists per row (scores float32, indices int64,
// [rows, n] and [rows, m]) by order_keys: exact, whatever the ties.
std::pair<torch::Tensor, torch::Tensor> merge_top(const torch::Tensor& scores_a, const torch::Tensor& indices_a,
                                                  const torch::Tensor& scores_b, const torch::Tensor& indices_b,
                                                  std::int64_t c);

// The int8 pass's products: out[i][j] = sum_d queries[i][d] * corpus_rows[j][d]
// as int32 (queries [M, D], corpus_rows [N, D], int8, row-major, on the CPU;
// out [M, N] int32), by LibTorch's int8 GEMM. The corpus side is handed over
// transposed with unambiguous strides: LibTorch 2.11's int8 GEMM multiplied a
// [1, N] operand with strides (1, 1) (D = 1) wrongly.
void int8_products(torch::Tensor& out, const torch::Tensor& queries, const torch::Tensor& corpus_rows);

}  // namespace kalm::search::detail
