#pragma once
// Online hard-negative mixing (KaLM V2, recipe §3.3): synthetic hard negatives
// made in embedding space from a query's own mined negatives, every step.
//
// Pair-wise: h = normalize(λ·n_j + (1−λ)·n_k), j ≠ k drawn uniformly from the
// query's own M negatives, λ ~ Beta(a, b) (KaLM: Beta(2,2), so λ concentrates
// near 0.5). List-wise: h = normalize(Σ_m λ_m n_m), λ = softmax_m(s(q, n_m)/τ_mix).
//
// compute_loss (loss.h) uses these; they are public so that a caller (or a
// test) can reproduce exactly which negatives were mixed.
//
// Determinism: draw_pairwise_mixing draws, in this order, the first indices,
// the offsets of the second indices, then two Gamma tensors (Beta = X/(X+Y)),
// all from `generator` on the generator's device. Same generator state, same
// draws. The results stay on the generator's device; move them as needed.
//
// Thread safety: pure functions, except that draw_pairwise_mixing advances
// `generator` (do not share one generator between threads).

#include <torch/torch.h>

#include <cstdint>

namespace kalm::loss {

// Which pairs to mix and with which weights, for B rows and K negatives per row.
struct PairwiseDraws {
  torch::Tensor first;   // [B, K] int64 in [0, M): index j of the first negative
  torch::Tensor second;  // [B, K] int64 in [0, M), never equal to `first`
  torch::Tensor lambda;  // [B, K] float64 in [0, 1]: weight of the first negative
  // Set once check_pairwise_draws() passed for these tensors: mix_pairwise()
  // then skips its own range check, which on a device reads a flag back.
  bool checked = false;
};

// Throws UsageError unless the draws are [B, K] int64 (first, second) and
// float (lambda) with every index in [0, M). Reads host tensors on the host;
// device tensors cost one synchronisation.
void check_pairwise_draws(const PairwiseDraws& draws, std::int64_t rows, std::int64_t num_negatives);

// Draws the pair-wise mixing choices. rows >= 0, per_row >= 1, num_negatives
// (M) >= 2, beta_a > 0, beta_b > 0, generator defined; otherwise UsageError.
PairwiseDraws draw_pairwise_mixing(std::int64_t rows, std::int64_t num_negatives, std::int64_t per_row,
                                   double beta_a, double beta_b, torch::Generator generator);

// negatives: [B, M, d] (each query's own hard negatives, normally unit rows).
// Returns [B, K, d] unit-norm synthetic negatives in negatives' dtype; gradient
// flows into `negatives` (detach the result to treat them as constants).
// Throws UsageError when the draws do not fit [B, M] (check_pairwise_draws,
// unless draws.checked).
torch::Tensor mix_pairwise(const torch::Tensor& negatives, const PairwiseDraws& draws);

// queries: [B, d], negatives: [B, M, d] (unit rows), mix_temperature > 0.
// Returns [B, 1, d] unit-norm synthetic negatives; gradient flows into both
// inputs (through the mixture weights as well). Throws UsageError on bad shapes.
torch::Tensor mix_listwise(const torch::Tensor& queries, const torch::Tensor& negatives, double mix_temperature);

}  // namespace kalm::loss
