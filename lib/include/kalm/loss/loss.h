#pragma once
// The KaLM training objective (recipe §3): InfoNCE over in-batch and hard
// negatives, focal-style reweighting, online hard-negative mixing, Matryoshka
// sub-spaces and contrastive distillation, behind one entry point.
//
// Layout (FlagEmbedding's): queries Q [B, D]; passages P [B·G, D] ordered
// [p_1+, p_1,1..M-, p_2+, p_2,1..M-, ...], G = 1 + M. For each Matryoshka dim d
// (q, p truncated to their first d columns, then L2-normalised):
//
//   row i of the logits: s(q_i, p_c)/τ for every column c of P (B·G columns),
//     then K synthetic negatives of query i (mixing), then nothing else.
//     A row without in-batch negatives (BatchInfo::in_batch[i] false) keeps only
//     its own group's G columns: the others are -inf before the softmax, which
//     equals FlagEmbedding's in-group-only B × G loss with target 0.
//     A column whose passage is a copy of row i's positive (BatchInfo::
//     duplicates) is -inf in row i too when mask_duplicates is on: the same
//     text is not a negative of itself (a false negative, e.g. two queries of
//     one batch with the same definition as positive).
//     Synthetic columns appear only in their own query's row (equivalent to
//     -inf in every other row; they are not materialised there).
//   target: column i·G (the query's positive).
//   nll_i = −log p_i, p_i = softmax probability of the positive in that row
//     (synthetic negatives included).
//   infonce_d = mean_i nll_i
//   focal_d   = mean_i w_i · nll_i,  w_i = (1 − p_i)^γ   (not renormalised by Σw;
//     γ = 0 gives infonce_d exactly). 1 − p_i is computed as the softmax mass of
//     the negatives, exp(lse(neg) − lse(all)), so w and its gradient stay finite
//     when p_i rounds to 1.
//   kl_d = (1/B) Σ_i KL(P_t(·|i) ‖ P_s(·|i))  (torch KLDivLoss 'batchmean'),
//     P_t = softmax_g(teacher_scores[i, g]/τ_t) over the query's G passages,
//     P_s = softmax(s(q_i, ·)/τ_s) over the group (kGroup) or over the whole
//     masked in-batch row (kInBatch; teacher mass is zero outside the group).
//     Synthetic negatives never enter the KL.
//   symmetric (sentence-transformers' MultipleNegativesSymmetricRankingLoss):
//     back_d = mean over rows i with in-batch negatives of
//     −log softmax_j(s(q_j, p_i+)/τ)[i], each positive against every query of
//     the batch (queries of rows without in-batch negatives, and queries whose
//     positive is a copy of p_i, left out); focal_d is then (focal_d + back_d)/2.
//   loss_d = focal_d + α·kl_d   (kl term only with teacher scores; distill_only
//     drops focal_d).
// total = Σ_d c_d · loss_d: a weighted sum, not divided by Σ c_d (recipe §3.6:
// the KaLM weights 1, .3, .2, .1, .1 sum to 1.7 and are used as they are).
//
// Mixing randomness is drawn once per call and shared by every Matryoshka dim:
// the same (j, k, λ) mix the d-dim prefixes of the same two negatives. List-wise
// weights are recomputed per dim from that dim's similarities. Mixing needs
// M >= 2; with M < 2 (e.g. pre-training, M = 0) no synthetic negatives are made.
//
// Precision: computed in float64 when either input is float64, otherwise in
// float32 (f16/bf16 inputs are upcast). Device: whatever device q and p share;
// the generator may live on another device (draws are moved).
//
// Errors: every shape, dtype, device and option problem throws kalm::UsageError
// naming the tensor or option and the sizes seen. A row with no negative at all
// (G = 1 without in-batch negatives, or B·G = 1) is a UsageError too: its loss
// would be identically zero.
//
// Thread safety: compute_loss is a pure function except that it advances
// `generator` when pair-wise mixing is active.
//
// Cross-device negatives are the caller's job: gather q and p across ranks
// first (local shard keeping its gradient), then call compute_loss once.

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kalm::loss {

enum class MixMode {
  kNone,      // no synthetic negatives
  kPairwise,  // K per query: normalize(λ n_j + (1−λ) n_k), λ ~ Beta(a, b)
  kListwise,  // 1 per query: normalize(Σ softmax_m(s(q, n_m)/τ_mix) n_m)
};

enum class DistillScope {
  kGroup,    // student softmax over the query's own G passages (FlagEmbedding kl_div)
  kInBatch,  // student softmax over the whole (masked) in-batch row
};

// Defaults are the KaLM V2/V2.5 fine-tuning recipe (recipe §3, §8). [I] marks a
// default the sources leave open (recipe §8).
struct LossOptions {
  // InfoNCE
  double temperature = 0.01;       // τ; 0.01 as in the released V1 script (recipe §8) [I for V2]
  bool inputs_normalized = false;  // true: q, p rows already unit-norm; skips the full-dim normalise
                                   // (truncated Matryoshka prefixes are always renormalised)
  // Focal reweighting
  double focal_gamma = 0.5;    // γ in w = (1 − p)^γ; 0 = plain InfoNCE
  bool focal_detach = false;   // true: w is a constant; default lets gradient flow (standard focal) [I]
  // Online hard-negative mixing
  MixMode mix = MixMode::kPairwise;       // synthetic negatives from the query's own M negatives
  std::int64_t mix_count = 1;             // K per query (pair-wise); list-wise requires 1 [I]
  double mix_beta_a = 2.0;                // λ ~ Beta(a, b)
  double mix_beta_b = 2.0;
  std::optional<double> mix_temperature;  // τ_mix of list-wise weights; unset = temperature [I]
  bool mix_detach = true;                 // synthetic negatives are constants (MoCHi convention) [I]
  // Matryoshka: each dim's loss on renormalised prefixes; empty dims = the full dim only.
  // The largest dim must equal the embedding size D (see recipe_matryoshka).
  std::vector<std::int64_t> matryoshka_dims{896, 512, 256, 128, 64};
  std::vector<double> matryoshka_weights{1.0, 0.3, 0.2, 0.1, 0.1};  // c_d, not renormalised
  // Contrastive distillation (active when BatchInfo::teacher_scores is defined)
  double distill_weight = 1.0;        // α in focal + α·KL [I]
  double teacher_temperature = 0.05;  // τ_t (recipe §3.4: 0.05 best)
  double student_temperature = 0.05;  // τ_s
  DistillScope distill_scope = DistillScope::kGroup;  // [I]
  bool distill_only = false;          // total = α·KL (the "KL only" ablation); needs teacher scores
  // False negatives: columns of BatchInfo::duplicates are left out of their
  // rows (as sentence-transformers' and FlagEmbedding's duplicate masking).
  bool mask_duplicates = true;
  // Symmetric InfoNCE: the passage-to-query term averaged with the query-to-passage one.
  bool symmetric = false;
};

// What the loss needs to know about the batch besides the embeddings.
struct BatchInfo {
  std::int64_t group_size = 1;   // G = 1 + M passages per query (1 in pre-training)
  torch::Tensor in_batch;        // [B] bool: row uses in-batch negatives; undefined = all rows do
  torch::Tensor teacher_scores;  // [B, G] floating raw teacher similarities (pos first);
                                 // undefined = no distillation
  torch::Tensor duplicates;      // [B, B·G] bool: column c holds the same text as row i's positive
                                 // (never the positive's own column); undefined = none
};

// The duplicates mask of a batch from its passages' texts (B·G, group-major,
// positive first in each group): column c of row i is true when passage c is
// identical to row i's positive and is not that positive. Undefined when no
// row has a duplicate (the common case costs no mask). Throws UsageError when
// the count is not a multiple of group_size.
torch::Tensor duplicate_positives(const std::vector<std::string>& passage_texts, std::int64_t group_size);

struct LossOutput {
  torch::Tensor total;  // 0-dim, differentiable: call backward() on it
  // Detached 0-dim tensors on the input device (call .item<double>() to log).
  // Per dim d (decimal): "infonce@d", "focal@d", "loss@d", and "kl@d" with
  // teacher scores. Aggregates weighted by c_d like total: "infonce", "focal",
  // "kl" (with teacher scores), and with symmetric "backward@d" / "backward"
  // (the passage-to-query term). total == Σ c_d loss@d.
  std::map<std::string, torch::Tensor> components;
  // Detached 0-dim tensors, per dim "…@d" and unsuffixed for the largest dim:
  // "p_pos" mean softmax probability of the positive (synthetic negatives
  // included), "accuracy" fraction of rows whose positive scores strictly above
  // every real (non-synthetic, unmasked) negative, "focal_weight" mean w_i.
  // Plus "synthetic_negatives": K per row actually used (0 when mixing is off),
  // and "masked_duplicates": columns left out as copies of a row's positive,
  // summed over the batch (0 without BatchInfo::duplicates or mask_duplicates).
  std::map<std::string, torch::Tensor> metrics;
};

// Checks the options alone (no tensors); throws UsageError naming the field.
// compute_loss calls it; tools may call it early to reject bad flags.
void validate_options(const LossOptions& options);

// The whole objective. queries [B, D], passages [B·G, D]: floating (f16, bf16,
// f32, f64), on one device; in_batch and teacher_scores are moved there.
// `generator` is needed (defined) only when pair-wise mixing is active
// (mix == kPairwise and G >= 3); pass a seeded CPU generator for draws that do
// not depend on the device, and checkpoint its state for an exact resume.
// Throws UsageError (see above).
LossOutput compute_loss(const torch::Tensor& queries, const torch::Tensor& passages, const BatchInfo& batch,
                        const LossOptions& options, torch::Generator generator = {});

// The in-batch-negative policy by record `type` (conventions.md; recipe §4.4):
// classification and clustering groups are scored against their own group only
// (same-class items in a batch would be false negatives); retrieval, sts,
// reranking, pair, bitext and a missing type ("") use in-batch negatives.
// Throws UsageError for any other type.
bool in_batch_negatives_for_type(std::string_view type);

// [B] bool mask from each row's record type (in_batch_negatives_for_type), on
// `device`. Throws UsageError naming the row of an unknown type.
torch::Tensor in_batch_mask(const std::vector<std::string>& types, torch::Device device);

// The recipe's Matryoshka dims and weights for an embedding size: 896 (Qwen2-0.5B
// KaLM) -> {896, 512, 256, 128, 64} / {1, .3, .2, .1, .1}; 3840 (Gemma3-12B)
// -> {3840, 2048, 1024, 512, 256, 128, 64} / {1, .3, .2, .1, .1, .1, .1} (weights
// by analogy [I]); any other size -> {dim} / {1} (no published list).
// Throws UsageError when dim < 1.
void set_recipe_matryoshka(LossOptions& options, std::int64_t dim);

}  // namespace kalm::loss
