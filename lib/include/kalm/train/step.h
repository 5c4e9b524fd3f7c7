#pragma once
// One training step's tensor work: tokenised batches, how their rows are cut
// into model calls, training embeddings, the loss and its gradients (plainly
// or with GradCache), and the learning-rate schedule.
//
// Model calls: a step's queries and passages go to the model together, sorted
// by length and cut into calls of at most CallOptions::max_tokens padded
// tokens, each padded only to its own longest row. Few large calls keep an
// accelerator busy (a call costs a fixed launch overhead whatever its size);
// sorting keeps the padding small. All token ids and masks of a step are
// checked on the host and uploaded in one copy (from pinned memory, without
// blocking, on CUDA), and looked up in the embedding table once per pass.
//
// GradCache (Gao et al. 2021): every call is a chunk, embedded without a graph;
// the loss runs on leaf copies of all B query and B·G passage embeddings; each
// chunk is then embedded again with a graph and backpropagated with its cached
// embedding gradient. Peak activation memory is one chunk's, whatever B is,
// and the gradients equal a plain backward's up to float rounding (the model
// has no dropout, so the second pass recomputes exactly the first). The
// chunks' token-embedding gradients are summed into the table's gradient in
// place (index_put_ with accumulation: deterministic on CPU and CUDA), not as
// one dense [vocab, hidden] gradient per chunk.
//
// Shapes/dtypes: ids [N, L] int64 right-padded, mask [N, L] int64 (1 token,
// 0 pad); embeddings [N, H] float32 (pooled, not normalised: the loss
// normalises and truncates for Matryoshka itself).
//
// Host synchronisations: none in this file's step functions (every input check
// runs on host data before the upload); the caller reads the loss back.
//
// Thread safety: none; one training loop per encoder.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
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
  torch::Tensor ids;       // [N, L] int64, on the host
  torch::Tensor mask;      // [N, L] int64, on the host
  std::int64_t tokens = 0; // non-pad tokens
  // Tokens of each row (the mask's row sums), kept on the host so that
  // packing and slicing never read a device tensor. Empty = derive from mask.
  std::vector<std::int64_t> lengths;
  // Per row, the leading tokens the pooling leaves out (the instruction of a
  // query under sentence-transformers' include_prompt=false; attention still
  // sees them). Empty = every token is pooled.
  std::vector<std::int64_t> pool_from;
};

// BPE dropout on the texts of a training batch (kalm-train --bpe-dropout).
struct TextDropout {
  double p = 0;            // each merge skipped with this probability; 0 = none
  std::uint64_t seed = 0;  // text i draws from a generator seeded by (seed, i)
  // Per text, the leading ids (an instruction prompt's, counted without special
  // tokens) encoded without dropout. Empty = none kept.
  std::vector<std::size_t> keep_leading;
};

// Tokenises `texts` (special tokens added, truncated to max_length) and pads
// on the right with the tokenizer's pad id (0 when it has none; masked anyway).
// Throws UsageError for max_length < 1 and FormatError naming sources[i] (or
// the index) when a text yields no token at all (its embedding is undefined).
// `dropout`: BPE dropout per text (TextDropout).
TokenBatch tokenize_batch(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                          std::int64_t max_length, const std::vector<std::string>& sources = {},
                          const TextDropout& dropout = {});

// Rows [begin, end) of a batch, trimmed to the longest row in that range
// (host tensors; no device read).
TokenBatch slice_rows(const TokenBatch& batch, std::int64_t begin, std::int64_t end);

// How a step's texts are cut into model calls. The default size depends on
// the device: a GPU wants few large calls (each costs a fixed launch
// overhead); on CPU calls of 512-2048 tokens ran ~20% faster than one of
// 12k in bench/train (their activations stay in the caches).
inline constexpr std::int64_t kDefaultCallTokensCpu = 2048;
inline constexpr std::int64_t kDefaultCallTokensGpu = 16384;
std::int64_t default_call_tokens(const torch::Device& device);
struct CallOptions {
  // Most padded tokens (rows x the call's longest row) in one model call; a
  // row longer than this still gets a call of its own.
  std::int64_t max_tokens = kDefaultCallTokensCpu;
  // GradCache: no graph across calls, each call is a chunk (see above).
  bool grad_cache = false;
  // Most texts in one call (--grad-cache-chunk); unset = only max_tokens.
  std::optional<std::int64_t> max_rows;
};

// Rows in ascending length order (ties in input order), cut greedily into
// calls: a call takes the next row while (rows + 1) x that row's length stays
// within max_tokens and rows + 1 within max_rows. Deterministic.
struct CallPlan {
  struct Call {
    std::int64_t first = 0;   // position in `order` of the call's first row
    std::int64_t rows = 0;
    std::int64_t length = 0;  // padded length (its longest row)
    // Every row as long as the call (no padding; common where texts are cut
    // at --max-length): on a GPU such a call attends without a key mask,
    // which flash attention needs.
    bool unpadded = true;
  };
  std::vector<std::int64_t> order;  // packed position -> input row
  std::vector<Call> calls;
  std::int64_t padded_tokens() const;
};
// Throws UsageError for max_tokens < 1, max_rows < 1 or a length < 1.
CallPlan plan_calls(const std::vector<std::int64_t>& lengths, const CallOptions& options);

// encoder->forward + pool: [N, H] float32 in the input order, with a graph
// when grad mode is on; the rows are embedded in the calls plan_calls makes
// (one embedding-table lookup for all of them). Throws ModelError for a token
// id outside the model's vocabulary, UsageError for a mask that is not
// right-padded or a row without tokens (checked on the host).
torch::Tensor embed_for_training(const model::EncoderImpl& encoder, const TokenBatch& batch, model::Pooling pooling,
                                 const CallOptions& calls = {});

struct TrainBatch {
  TokenBatch queries;        // B rows
  TokenBatch passages;       // B·G rows, group-major (loss.h layout)
  loss::BatchInfo info;      // group_size, in_batch mask, teacher scores
  // The texts behind the rows and where each came from ("file:line (query)"),
  // for a teacher that scores the batch itself (teacher.h).
  std::vector<std::string> query_texts;      // B, instruction applied
  std::vector<std::string> query_prompts;    // B, each query's instruction prefix (Example::prompt; "" = none)
  std::vector<std::string> passage_texts;    // B·G, group-major
  std::vector<std::string> query_sources;    // B
  std::vector<std::string> passage_sources;  // B·G
};

// Computes the loss on `batch` and accumulates d(loss · loss_scale)/dθ into the
// encoder's .grad (call zero_grad() first for a fresh step). calls: how the
// batch's queries and passages (together) are cut into model calls, and
// whether with GradCache. `generator` feeds the loss's mixing draws (loss.h).
// Returns the loss output (components detached; `total` detached too). Throws
// what compute_loss and the encoder throw; UsageError for bad CallOptions.
// bf16_autocast: run the encoder under LibTorch's autocast on its device
// (model::Autocast: matmuls and linear layers in bfloat16, weights, gradients,
// pooling and the loss in float32), as torch.autocast(device, torch.bfloat16).
// Device: the batch's token tensors live on the host; they are checked there
// and moved to the encoder's device in one copy, where the embeddings, the
// loss and the gradients live.
// parallel: `batch` holds this rank's slice of the queries and passages while
// batch.info describes the global batch; embeddings are all-gathered before
// the loss (dist.h). Gradients are NOT summed over ranks here (the caller does
// it once per optimiser step).
// final_backward: set for the optimiser step's last micro-batch when gradients
// are summed in buckets during backward (GradientBuckets): it is armed right
// before the backward pass after which every gradient is final (GradCache:
// the last call's); the caller finishes it.
loss::LossOutput forward_backward(model::EncoderImpl& encoder, const TrainBatch& batch, model::Pooling pooling,
                                  const loss::LossOptions& loss_options, const CallOptions& calls,
                                  torch::Generator generator, double loss_scale = 1.0, bool bf16_autocast = false,
                                  DataParallel* parallel = nullptr, GradientBuckets* final_backward = nullptr);

// Samples the groups of `indices` (in order, from `rng`; see sample_group),
// tokenises queries to query_max_length and passages to passage_max_length,
// and builds the loss's BatchInfo (group size 1 + M, in-batch mask from the
// records' types, teacher scores [B, 1 + M] float64 when with_scores; left
// undefined otherwise). The texts and their sources are kept in the batch.
// Throws what sample_group, tokenize_batch and loss::in_batch_mask throw.
// prompt_tokens: when set (include_prompt=false), each query's pool_from is
// the token count of its instruction prefix (Example::prompt) as
// prompt_tokens measures it; a query whose tokens are all prompt is a
// FormatError naming its source.
// bpe_dropout > 0: queries and passages are tokenised with BPE dropout, the
// seeds drawn from `rng` after the groups (so the sampled groups do not depend
// on it); prompt_model_ids gives each instruction prompt's id count without
// special tokens, the part of a query kept whole (it must be set then when
// some query has a prompt).
using PromptTokenCount = std::function<std::int64_t(const std::string& prompt)>;
TrainBatch build_batch(const Dataset& data, const std::vector<std::size_t>& indices, std::int64_t num_negatives,
                       bool with_scores, std::mt19937_64& rng, const text::Tokenizer& tokenizer,
                       std::int64_t query_max_length, std::int64_t passage_max_length,
                       const PromptTokenCount& prompt_tokens = {}, double bpe_dropout = 0,
                       const PromptTokenCount& prompt_model_ids = {});

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
