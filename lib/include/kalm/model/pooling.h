#pragma once
// From per-token hidden states to one vector per sequence: pooling, L2
// normalisation and Matryoshka truncation (sentence-transformers semantics).
//
// Shapes: hidden [B, L, H] (any floating dtype, any device), mask [B, L] with
// nonzero = token, 0 = padding (any integer, bool or floating dtype). Results
// are float32 on the input's device. Padding may sit on either side for Mean
// and LastToken; Cls takes position 0, so it needs right padding.
//
// Thread safety: pure functions of their arguments.

#include <torch/torch.h>

#include <cstdint>
#include <string_view>

namespace kalm::model {

enum class Pooling {
  Mean,       // average over non-pad tokens (KaLM V1-V2.5)
  LastToken,  // the last non-pad token (KaLM-Gemma3)
  Cls,        // the first token
};

std::string_view pooling_name(Pooling pooling);  // "mean" / "last" / "cls"
// "mean" | "last" | "cls" ("lasttoken" is accepted too); UsageError listing the choices.
Pooling parse_pooling(std::string_view name);

// Who makes sure no row is empty: pool() on the device (a host
// synchronisation), or a caller that checked its host-side lengths already
// (training's packed calls), so the device is never waited for.
enum class EmptyRows { kCheckOnDevice, kCheckedByCaller };

// [B, L, H] x [B, L] -> [B, H] float32. Mean sums in float32. Throws UsageError
// on shape mismatch and on a row with no tokens (its embedding is undefined;
// reported with the row index rather than returned as zeros or NaN).
torch::Tensor pool(const torch::Tensor& hidden, const torch::Tensor& mask, Pooling pooling,
                   EmptyRows empty_rows = EmptyRows::kCheckOnDevice);

// Rows divided by max(||row||_2, 1e-12), as torch.nn.functional.normalize. [N, D] float32.
torch::Tensor l2_normalize(const torch::Tensor& x);

// Matryoshka: the first `dim` columns of [N, D], L2-normalised again.
// Throws UsageError unless 0 < dim <= D.
torch::Tensor matryoshka(const torch::Tensor& x, std::int64_t dim);

}  // namespace kalm::model
