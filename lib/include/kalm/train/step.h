#pragma once
// One training step's tensor work: tokenised batches, training embeddings, the
// loss and its gradients (plainly or with GradCache), and the learning-rate
// schedule.
//
// GradCache (Gao et al. 2021): with chunk size C the batch is embedded in
// chunks of C texts without a graph; the loss runs on leaf copies of all B
// query and B·G passage embeddings; each chunk is then embedded again with a
// graph and backpropagated with its cached embedding gradient. Peak activation
// memory is one chunk's, whatever B is, and the gradients equal a plain
// backward's up to float rounding (the model has no dropout, so the second pass
// recomputes exactly the first).
//
// Shapes/dtypes: ids [N, L] int64 right-padded, mask [N, L] int64 (1 token,
// 0 pad); embeddings [N, H] float32 (pooled, not normalised: the loss
// normalises and truncates for Matryoshka itself).
//
// Thread safety: none; one training loop per encoder.

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kalm/loss/loss.h"
#include "kalm/model/pooling.h"
#include "kalm/model/transformer.h"
#include "kalm/text/tokenizer.h"
#include "kalm/train/data.h"
#include "kalm/train/dist.h"

namespace kalm::train {

struct TokenBatch {
  torch::Tensor ids;       // [N, L] int64
  torch::Tensor mask;      // [N, L] int64
  std::int64_t tokens = 0; // non-pad tokens
};

// Tokenises `texts` (special tokens added, truncated to max_length) and pads
// on the right with the tokenizer's pad id (0 when it has none; masked anyway).
// Throws UsageError for max_length < 1 and FormatError naming sources[i] (or
// the index) when a text yields no token at all (its embedding is undefined).
TokenBatch tokenize_batch(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                          std::int64_t max_length, const std::vector<std::string>& sources = {});

// Rows [begin, end) of a batch, trimmed to the longest row in that range.
TokenBatch slice_rows(const TokenBatch& batch, std::int64_t begin, std::int64_t end);

// encoder->forward + pool: [N, H] float32, with a graph when grad mode is on.
// Rows are embedded in length-sorted buckets of up to kLengthBucketRows, each
// padded only to its own longest row, and returned in the input order: a
// contrastive batch mixes short queries with long passages, and padding every
// row to the batch's longest wastes most of the compute on short texts.
inline constexpr std::int64_t kLengthBucketRows = 64;
torch::Tensor embed_for_training(const model::EncoderImpl& encoder, const TokenBatch& batch, model::Pooling pooling);

struct TrainBatch {
  TokenBatch queries;        // B rows
  TokenBatch passages;       // B·G rows, group-major (loss.h layout)
  loss::BatchInfo info;      // group_size, in_batch mask, teacher scores
  // The texts behind the rows and where each came from ("file:line (query)"),
  // for a teacher that scores the batch itself (teacher.h).
  std::vector<std::string> query_texts;      // B, instruction applied
  std::vector<std::string> passage_texts;    // B·G, group-major
  std::vector<std::string> query_sources;    // B
  std::vector<std::string> passage_sources;  // B·G
};

// Computes the loss on `batch` and accumulates d(loss · loss_scale)/dθ into the
// encoder's .grad (call zero_grad() first for a fresh step). grad_cache_chunk:
// nullopt = one plain forward/backward; C >= 1 = GradCache with C texts per
// chunk. `generator` feeds the loss's mixing draws (loss.h). Returns the loss
// output (components detached; `total` detached too). Throws what
// compute_loss and the encoder throw; UsageError for C < 1.
// bf16_autocast: run the encoder under LibTorch's autocast on its device
// (model::Autocast: matmuls and linear layers in bfloat16, weights, gradients,
// pooling and the loss in float32), as torch.autocast(device, torch.bfloat16).
// Device: the batch's token tensors may live anywhere; they are moved to the
// encoder's device, where the embeddings, the loss and the gradients live.
// parallel: `batch` holds this rank's slice of the queries and passages while
// batch.info describes the global batch; embeddings are all-gathered before
// the loss (dist.h). Gradients are NOT summed over ranks here (the caller does
// it once per optimiser step).
loss::LossOutput forward_backward(model::EncoderImpl& encoder, const TrainBatch& batch, model::Pooling pooling,
                                  const loss::LossOptions& loss_options, std::optional<std::int64_t> grad_cache_chunk,
                                  torch::Generator generator, double loss_scale = 1.0, bool bf16_autocast = false,
                                  DataParallel* parallel = nullptr);

// Samples the groups of `indices` (in order, from `rng`; see sample_group),
// tokenises queries to query_max_length and passages to passage_max_length,
// and builds the loss's BatchInfo (group size 1 + M, in-batch mask from the
// records' types, teacher scores [B, 1 + M] float64 when with_scores; left
// undefined otherwise). The texts and their sources are kept in the batch.
// Throws what sample_group, tokenize_batch and loss::in_batch_mask throw.
TrainBatch build_batch(const Dataset& data, const std::vector<std::size_t>& indices, std::int64_t num_negatives,
                       bool with_scores, std::mt19937_64& rng, const text::Tokenizer& tokenizer,
                       std::int64_t query_max_length, std::int64_t passage_max_length);

enum class Schedule {
  kLinear,    // linear warm-up, then linear decay to 0 (HF get_linear_schedule_with_warmup)
  kCosine,    // linear warm-up, then half a cosine to 0 (HF get_cosine_schedule_with_warmup)
  kConstant,  // linear warm-up, then constant
};

// "linear" | "cosine" | "constant"; UsageError otherwise.
Schedule parse_schedule(const std::string& name);

// The learning rate of optimiser step `step` (0-based) out of `total`, as HF's
// LambdaLR multiplier times `peak`: step/warmup during warm-up (so step 0 runs
// at lr 0 when warmup > 0, as in HF), then the decay.
double learning_rate_at(std::int64_t step, std::int64_t total, std::int64_t warmup, double peak, Schedule schedule);

// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_(foreach=True):
// the total 2-norm of the parameters' gradients (0-dim, on their device), and
// with max_norm every gradient scaled by min(1, max_norm / (norm + 1e-6)); all
// on the device, no host synchronisation. Without max_norm nothing is scaled.
// Parameters without a gradient are skipped (norm 0 when none has one).
torch::Tensor clip_gradients(const std::vector<torch::Tensor>& params, std::optional<double> max_norm);

}  // namespace kalm::train
