#include "kalm/encode/engine.h"

#include "kalm/core/profile.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>

#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "kalm/error.h"

namespace kalm::encode {

std::vector<std::vector<std::size_t>> plan_batches(const std::vector<std::size_t>& lengths,
                                                   const EngineOptions& options) {
  if (options.batch_tokens < 1) throw UsageError("--batch-tokens must be positive");
  if (!(options.max_padding >= 0.0 && options.max_padding <= 1.0))
    throw UsageError("the padding fraction per batch must be within [0, 1]");
  if (options.max_rows < 0) throw UsageError("the rows per batch must not be negative");
  const std::size_t max_rows =
      options.max_rows > 0 ? static_cast<std::size_t>(options.max_rows) : std::numeric_limits<std::size_t>::max();
  std::vector<std::size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (options.sort_by_length) {
    // Longest first; stable, so equal lengths keep input order (deterministic).
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return lengths[a] > lengths[b]; });
  }
  std::vector<std::vector<std::size_t>> batches;
  std::vector<std::size_t> current;
  std::size_t longest = 0;
  const auto budget = static_cast<std::size_t>(options.batch_tokens);
  for (std::size_t index : order) {
    const std::size_t new_longest = std::max(longest, lengths[index]);
    const bool too_much_padding =
        options.sort_by_length &&
        static_cast<double>(new_longest - lengths[index]) > options.max_padding * static_cast<double>(new_longest);
    if (!current.empty() &&
        ((current.size() + 1) * new_longest > budget || too_much_padding || current.size() == max_rows)) {
      batches.push_back(std::move(current));
      current.clear();
      longest = lengths[index];
    } else {
      longest = new_longest;
    }
    current.push_back(index);
  }
  if (!current.empty()) batches.push_back(std::move(current));
  return batches;
}

std::int64_t default_batch_tokens(const torch::Device& device) {
  return device.is_cpu() ? kDefaultBatchTokensCpu : kDefaultBatchTokensGpu;
}

Engine::Engine(BatchEmbedder& embedder, EngineOptions options) : embedder_(embedder), options_(options) {
  if (options_.batch_tokens == 0) options_.batch_tokens = default_batch_tokens(embedder_.device());
  if (options_.max_rows == 0 && embedder_.device().is_cuda()) options_.max_rows = kMaxGpuBatchRows;
}

namespace {

// A batch whose pooled rows are on their way to the host: on a GPU the copy
// was queued behind the batch's forward pass and `ready` marks its end, so
// the host can build and queue the next batch before waiting for this one.
struct InFlight {
  std::vector<std::size_t> rows;  // input positions, in the batch's order
  torch::Tensor pooled;           // [rows, D] float32 on the host (pinned on a GPU)
  std::optional<c10::Event> ready;
  std::int64_t tokens = 0;
};

}  // namespace

torch::Tensor Engine::embed(const std::vector<std::vector<std::int32_t>>& sequences,
                            const EngineProgress& progress, const std::vector<std::int64_t>& pool_from) {
  torch::NoGradGuard no_grad;
  KALM_ASSERT(pool_from.empty() || pool_from.size() == sequences.size(), "one pool start per sequence");
  std::vector<std::size_t> lengths(sequences.size());
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    if (sequences[i].empty())
      throw UsageError("sequence " + std::to_string(i) + " has no tokens");
    lengths[i] = sequences[i].size();
    if (!pool_from.empty() && pool_from[i] >= static_cast<std::int64_t>(lengths[i]))
      throw UsageError("sequence " + std::to_string(i) + ": its " + std::to_string(lengths[i]) +
                       " tokens are all prompt, which the model's pooling leaves out (include_prompt=false): "
                       "nothing is left to pool (an empty text, or --max-length too short)");
  }
  const auto batches = plan_batches(lengths, options_);
  const torch::Device device = embedder_.device();
  // On a GPU: ids and masks in pinned host memory (uploaded without blocking
  // by the embedder), results copied back without blocking; one wait per
  // batch, for the batch before the one just queued, so the GPU always has
  // the next batch while the host reads a finished one and builds another.
  const bool gpu = device.is_cuda();
  const auto host_long = torch::TensorOptions().dtype(torch::kInt64).pinned_memory(gpu);
  torch::Tensor out;
  std::int64_t done = 0, done_tokens = 0;

  auto retire = [&](InFlight& batch) {
    if (batch.ready) batch.ready->synchronize();
    const torch::Tensor& pooled = batch.pooled;
    const auto rows = static_cast<std::int64_t>(batch.rows.size());
    if (pooled.dim() != 2 || pooled.size(0) != rows) throw InternalError("embedder returned a tensor of the wrong shape");
    const float* values = pooled.data_ptr<float>();
    const std::int64_t dim = pooled.size(1);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < dim; ++c)
        if (!std::isfinite(values[r * dim + c])) {
          const std::size_t index = batch.rows[static_cast<std::size_t>(r)];
          throw NonFiniteEmbedding(index, "sequence " + std::to_string(index) +
                                              ": the model's output is NaN or infinite");
        }
    if (!out.defined()) out = torch::empty({static_cast<std::int64_t>(sequences.size()), dim}, torch::kFloat32);
    auto index = torch::tensor(std::vector<std::int64_t>(batch.rows.begin(), batch.rows.end()), torch::kInt64);
    out.index_copy_(0, index, pooled);
    done += rows;
    done_tokens += batch.tokens;
    if (progress) progress(done, done_tokens);
  };

  std::optional<InFlight> previous;
  for (const auto& batch : batches) {
    if (profile_) profile_->begin(stats_.batches + 1);
    std::size_t longest = 0;
    for (auto i : batch) longest = std::max(longest, lengths[i]);
    const auto rows = static_cast<std::int64_t>(batch.size());
    const auto cols = static_cast<std::int64_t>(longest);
    torch::Tensor ids = torch::full({rows, cols}, embedder_.pad_id(), host_long);
    torch::Tensor mask = torch::zeros({rows, cols}, host_long);
    torch::Tensor pool_mask = pool_from.empty() ? mask : torch::zeros({rows, cols}, host_long);
    auto* id_ptr = ids.data_ptr<std::int64_t>();
    auto* mask_ptr = mask.data_ptr<std::int64_t>();
    auto* pool_ptr = pool_mask.data_ptr<std::int64_t>();
    std::int64_t batch_tokens = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::size_t index = batch[static_cast<std::size_t>(r)];
      const auto& seq = sequences[index];
      const std::int64_t skip = pool_from.empty() ? 0 : pool_from[index];
      for (std::size_t t = 0; t < seq.size(); ++t) {
        const auto at = r * cols + static_cast<std::int64_t>(t);
        id_ptr[at] = seq[t];
        mask_ptr[at] = 1;
        if (!pool_from.empty()) pool_ptr[at] = static_cast<std::int64_t>(t) >= skip ? 1 : 0;
      }
      batch_tokens += static_cast<std::int64_t>(seq.size());
    }
    const torch::Tensor pooled = embedder_.embed(ids, mask, pool_mask).to(torch::kFloat32);
    InFlight current{batch, torch::Tensor(), std::nullopt, batch_tokens};
    if (pooled.device().is_cpu()) {
      current.pooled = pooled.contiguous();
    } else {
      current.pooled = torch::empty(pooled.sizes(), torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(true));
      current.pooled.copy_(pooled, /*non_blocking=*/true);
      current.ready.emplace(pooled.device().type());
      c10::impl::VirtualGuardImpl guard(pooled.device().type());
      current.ready->record(guard.getStream(pooled.device()));
    }
    ++stats_.batches;
    if (profile_) profile_->end(stats_.batches);
    stats_.sequences += rows;
    stats_.tokens += batch_tokens;
    stats_.padded_tokens += rows * cols;
    if (previous) retire(*previous);
    previous = std::move(current);
  }
  if (previous) retire(*previous);
  if (!out.defined()) out = torch::empty({0, 0}, torch::kFloat32);
  return out;
}

torch::Tensor finalize_embeddings(const torch::Tensor& pooled, std::int64_t dim, bool normalize) {
  torch::Tensor out = pooled;
  if (dim < 0) throw UsageError("--dim must be positive");
  if (dim > 0) {
    if (dim > pooled.size(1))
      throw UsageError("--dim " + std::to_string(dim) + " exceeds the model's dimension " +
                       std::to_string(pooled.size(1)));
    out = out.narrow(1, 0, dim);
  }
  if (normalize) {
    // Same as torch.nn.functional.normalize (eps 1e-12): a zero row stays zero.
    auto norms = out.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
    out = out / norms;
  }
  return out.contiguous();
}

}  // namespace kalm::encode
