#include "kalm/train/step.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <random>

#include "kalm/error.h"
#include "kalm/model/device.h"

namespace kalm::train {

TokenBatch tokenize_batch(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                          std::int64_t max_length, const std::vector<std::string>& sources,
                          const TextDropout& dropout) {
  if (max_length < 1) throw UsageError("maximum length must be at least 1 token, got " + std::to_string(max_length));
  if (!dropout.keep_leading.empty() && dropout.keep_leading.size() != texts.size())
    throw InternalError("tokenize_batch: " + std::to_string(dropout.keep_leading.size()) + " prompt lengths for " +
                        std::to_string(texts.size()) + " texts");
  text::EncodeOptions eo;
  eo.add_special_tokens = true;
  eo.max_length = static_cast<std::size_t>(max_length);
  eo.bpe_dropout = dropout.p;
  auto encodings = tokenizer.encode_batch(texts, [&](std::size_t i) {
    text::EncodeOptions o = eo;
    if (dropout.p > 0) {
      // One generator per text, so the ids do not depend on the thread count.
      o.dropout_seed = text::dropout_seed_for(dropout.seed, i);
      if (!dropout.keep_leading.empty()) o.dropout_after = dropout.keep_leading[i];
    }
    return o;
  });
  const auto n = static_cast<std::int64_t>(texts.size());
  std::int64_t longest = 1;
  for (std::size_t i = 0; i < encodings.size(); ++i) {
    if (encodings[i].ids.empty())
      throw FormatError((i < sources.size() ? sources[i] : "text " + std::to_string(i)) +
                        ": a text tokenises to nothing (empty text and no special tokens); its embedding is undefined");
    longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(encodings[i].ids.size()));
  }
  TokenBatch out;
  const std::int64_t pad = tokenizer.pad_id().value_or(0);
  out.ids = torch::full({n, longest}, pad, torch::kLong);
  out.mask = torch::zeros({n, longest}, torch::kLong);
  auto ids = out.ids.accessor<std::int64_t, 2>();
  auto mask = out.mask.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < n; ++i) {
    const auto& e = encodings[static_cast<std::size_t>(i)].ids;
    for (std::size_t j = 0; j < e.size(); ++j) {
      ids[i][static_cast<std::int64_t>(j)] = e[j];
      mask[i][static_cast<std::int64_t>(j)] = 1;
    }
    out.tokens += static_cast<std::int64_t>(e.size());
    out.lengths.push_back(static_cast<std::int64_t>(e.size()));
  }
  return out;
}

namespace {

// Tokens per row: batch.lengths, or (for a batch built by hand) the mask's row
// sums read on the host, with the right padding checked.
std::vector<std::int64_t> row_lengths(const TokenBatch& batch) {
  if (batch.ids.dim() != 2 || batch.mask.sizes() != batch.ids.sizes())
    throw UsageError("model input: ids and mask must both be [batch, length]");
  const std::int64_t n = batch.ids.size(0), width = batch.ids.size(1);
  if (!batch.lengths.empty()) {
    if (static_cast<std::int64_t>(batch.lengths.size()) != n)
      throw InternalError("TokenBatch: " + std::to_string(batch.lengths.size()) + " lengths for " +
                          std::to_string(n) + " rows");
    return batch.lengths;
  }
  const torch::Tensor mask = batch.mask.to(torch::kCPU, torch::kLong).contiguous();
  const std::int64_t* m = mask.data_ptr<std::int64_t>();
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t len = 0;
    while (len < width && m[i * width + len] != 0) ++len;
    for (std::int64_t j = len; j < width; ++j)
      if (m[i * width + j] != 0)
        throw UsageError("model input: attention_mask is not right-padded (a token follows padding); "
                         "kalm pads on the right so that positions start at 0");
    lengths[static_cast<std::size_t>(i)] = len;
  }
  return lengths;
}

}  // namespace

TokenBatch slice_rows(const TokenBatch& batch, std::int64_t begin, std::int64_t end) {
  const auto all = row_lengths(batch);
  TokenBatch out;
  out.lengths.assign(all.begin() + begin, all.begin() + end);
  std::int64_t longest = 1;
  for (auto len : out.lengths) {
    longest = std::max(longest, len);
    out.tokens += len;
  }
  longest = std::min(longest, batch.ids.size(1));
  out.mask = batch.mask.slice(0, begin, end).slice(1, 0, longest).contiguous();
  out.ids = batch.ids.slice(0, begin, end).slice(1, 0, longest).contiguous();
  if (!batch.pool_from.empty()) out.pool_from.assign(batch.pool_from.begin() + begin, batch.pool_from.begin() + end);
  return out;
}

std::int64_t default_call_tokens(const torch::Device& device) {
  return device.is_cpu() ? kDefaultCallTokensCpu : kDefaultCallTokensGpu;
}

std::int64_t CallPlan::padded_tokens() const {
  std::int64_t total = 0;
  for (const auto& c : calls) total += c.rows * c.length;
  return total;
}

CallPlan plan_calls(const std::vector<std::int64_t>& lengths, const CallOptions& options) {
  if (options.max_tokens < 1)
    throw UsageError("--call-tokens must be at least 1, got " + std::to_string(options.max_tokens));
  if (options.max_rows && *options.max_rows < 1)
    throw UsageError("--grad-cache-chunk must be at least 1, got " + std::to_string(*options.max_rows));
  CallPlan plan;
  plan.order.resize(lengths.size());
  std::iota(plan.order.begin(), plan.order.end(), std::int64_t{0});
  // Stable, so that equal lengths keep the input order and the plan (and the
  // float sums that follow it) are the same on every run.
  std::stable_sort(plan.order.begin(), plan.order.end(), [&](std::int64_t a, std::int64_t b) {
    return lengths[static_cast<std::size_t>(a)] < lengths[static_cast<std::size_t>(b)];
  });
  const std::int64_t max_rows = options.max_rows.value_or(std::numeric_limits<std::int64_t>::max());
  for (std::size_t pos = 0; pos < plan.order.size(); ++pos) {
    const std::int64_t len = lengths[static_cast<std::size_t>(plan.order[pos])];
    if (len < 1) throw InternalError("plan_calls: row " + std::to_string(plan.order[pos]) + " has no tokens");
    CallPlan::Call* open = plan.calls.empty() ? nullptr : &plan.calls.back();
    // Ascending order: the new row is the call's longest.
    if (open && open->rows < max_rows && (open->rows + 1) * len <= options.max_tokens) {
      ++open->rows;
      open->unpadded = open->unpadded && len == open->length;
      open->length = len;
    } else {
      plan.calls.push_back({static_cast<std::int64_t>(pos), 1, len, true});
    }
  }
  return plan;
}

namespace {

// A step's rows laid out as plan_calls says, on the encoder's device. One
// host buffer [ids | mask | order] is filled and checked on the
// host and uploaded in one copy.
struct PackedTokens {
  CallPlan plan;
  std::vector<std::int64_t> offsets;  // each call's first token in ids / mask
  torch::Tensor ids;      // [padded tokens] int64 (pads 0)
  torch::Tensor mask;     // [padded tokens] int64 (1 token, 0 pad)
  torch::Tensor order;    // [N] int64: input row at packed position k
  torch::Tensor pool_mask;  // [padded tokens] int64: the tokens pooled; undefined = mask
};

// parts are concatenated in order (queries, then passages): input row i of
// part 2 is row parts[0].rows + i. Token ids outside [0, vocab) are a
// ModelError naming the row and position, as EncoderImpl::forward's check.
PackedTokens pack_tokens(const model::EncoderImpl& encoder, const std::vector<const TokenBatch*>& parts,
                         const CallOptions& options) {
  std::vector<std::int64_t> lengths;
  std::vector<std::pair<const TokenBatch*, std::int64_t>> source;  // input row -> (part, row)
  for (const TokenBatch* part : parts) {
    const auto part_lengths = row_lengths(*part);
    for (std::size_t i = 0; i < part_lengths.size(); ++i) {
      if (part_lengths[i] < 1)
        throw UsageError("model input: sequence " + std::to_string(lengths.size()) + " of the batch has no tokens");
      lengths.push_back(part_lengths[i]);
      source.emplace_back(part, static_cast<std::int64_t>(i));
    }
  }
  if (lengths.empty()) throw UsageError("model input: empty batch");
  PackedTokens packed;
  packed.plan = plan_calls(lengths, options);
  const auto n = static_cast<std::int64_t>(lengths.size());
  const std::int64_t total = packed.plan.padded_tokens();
  // Rows that pool only part of their tokens (include_prompt=false) need a
  // pooling mask of their own; the usual batch has none.
  std::vector<std::int64_t> pool_from;
  bool partial_pooling = false;
  for (const TokenBatch* part : parts) {
    if (!part->pool_from.empty() && part->pool_from.size() != static_cast<std::size_t>(part->ids.size(0)))
      throw InternalError("TokenBatch: " + std::to_string(part->pool_from.size()) + " pool starts for " +
                          std::to_string(part->ids.size(0)) + " rows");
    for (std::int64_t i = 0; i < part->ids.size(0); ++i) {
      const std::int64_t from = part->pool_from.empty() ? 0 : part->pool_from[static_cast<std::size_t>(i)];
      if (from > 0) partial_pooling = true;
      pool_from.push_back(from);
    }
  }

  const torch::Device device = encoder.device();
  auto options_host = torch::TensorOptions().dtype(torch::kLong);
  if (device.is_cuda()) options_host = options_host.pinned_memory(true);
  const std::int64_t regions = partial_pooling ? 3 : 2;
  torch::Tensor host = torch::zeros({regions * total + n}, options_host);
  std::int64_t* ids = host.data_ptr<std::int64_t>();
  std::int64_t* mask = ids + total;
  std::int64_t* order = mask + total;
  std::int64_t* pool_mask = partial_pooling ? order + n : nullptr;
  // Contiguous host copies of each part's ids, read row by row below.
  std::vector<torch::Tensor> part_ids;
  for (const TokenBatch* part : parts) part_ids.push_back(part->ids.to(torch::kCPU, torch::kLong).contiguous());
  const std::int64_t vocab = encoder.config().vocab_size;
  std::int64_t offset = 0;
  for (const auto& call : packed.plan.calls) {
    packed.offsets.push_back(offset);
    for (std::int64_t r = 0; r < call.rows; ++r) {
      const std::int64_t pos = call.first + r;
      const std::int64_t row = packed.plan.order[static_cast<std::size_t>(pos)];
      order[pos] = row;
      const auto [part, part_row] = source[static_cast<std::size_t>(row)];
      const std::size_t p = static_cast<std::size_t>(std::find(parts.begin(), parts.end(), part) - parts.begin());
      const std::int64_t width = part_ids[p].size(1);
      const std::int64_t* src = part_ids[p].data_ptr<std::int64_t>() + part_row * width;
      const std::int64_t len = lengths[static_cast<std::size_t>(row)];
      std::int64_t* dst = ids + offset + r * call.length;
      std::int64_t* dst_mask = mask + offset + r * call.length;
      for (std::int64_t j = 0; j < len; ++j) {
        if (src[j] < 0 || src[j] >= vocab)
          // Ids the tokenizer produced that the model has no row for: the two do not belong together.
          throw ModelError("model input: token id " + std::to_string(src[j]) + " at sequence " + std::to_string(row) +
                           ", position " + std::to_string(j) + " is outside the vocabulary [0, " +
                           std::to_string(vocab) + ")");
        dst[j] = src[j];
        dst_mask[j] = 1;
      }
      if (pool_mask) {
        const std::int64_t from = pool_from[static_cast<std::size_t>(row)];
        if (from >= len)
          throw UsageError("model input: sequence " + std::to_string(row) + " has " + std::to_string(len) +
                           " tokens, all of them prompt, which the pooling leaves out (include_prompt=false)");
        std::fill(pool_mask + offset + r * call.length + from, pool_mask + offset + r * call.length + len, 1);
      }
    }
    offset += call.rows * call.length;
  }
  const torch::Tensor on_device = model::upload(host, device);
  packed.ids = on_device.narrow(0, 0, total);
  packed.mask = on_device.narrow(0, total, total);
  packed.order = on_device.narrow(0, 2 * total, n);
  if (partial_pooling) packed.pool_mask = on_device.narrow(0, 2 * total + n, total);
  return packed;
}

// Call c's rows from their token embeddings [rows * length, H]: [rows, H] float32.
torch::Tensor embed_call(const model::EncoderImpl& encoder, const PackedTokens& packed, std::size_t c,
                         const torch::Tensor& call_tokens, model::Pooling pooling) {
  const auto& call = packed.plan.calls[c];
  const torch::Tensor mask = packed.mask.narrow(0, packed.offsets[c], call.rows * call.length).view({call.rows, call.length});
  const torch::Tensor hidden =
      encoder.forward_from_embeddings(call_tokens.view({call.rows, call.length, -1}), mask, call.unpadded);
  const torch::Tensor pooled_tokens =
      packed.pool_mask.defined()
          ? packed.pool_mask.narrow(0, packed.offsets[c], call.rows * call.length).view({call.rows, call.length})
          : mask;
  return model::pool(hidden, pooled_tokens, pooling, model::EmptyRows::kCheckedByCaller);
}

// Every row, in packed order, one forward per call. With a graph, the table
// is looked up once for all calls: each lookup's backward builds a dense
// [vocab, hidden] gradient. Without one (GradCache's first pass) each call
// looks up its own tokens, so that the step's token embeddings never exist
// all at once (GradCache's memory is one call's).
torch::Tensor embed_packed_order(const model::EncoderImpl& encoder, const PackedTokens& packed,
                                 model::Pooling pooling) {
  const bool one_lookup = torch::GradMode::is_enabled();
  const std::size_t n_calls = packed.plan.calls.size();
  // The calls' tokens as one split of the lookup: a single autograd node whose
  // backward concatenates the calls' gradients. A narrow() per call would give
  // each call a backward that writes a zero tensor of the whole step's token
  // embeddings and adds its slice in (calls x tokens x hidden of work).
  std::vector<torch::Tensor> call_tokens;
  if (one_lookup) {
    std::vector<std::int64_t> sizes;
    for (const auto& call : packed.plan.calls) sizes.push_back(call.rows * call.length);
    call_tokens = encoder.embed_tokens->forward(packed.ids).split_with_sizes(sizes, 0);  // calls tile ids
  }
  std::vector<torch::Tensor> parts;
  for (std::size_t c = 0; c < n_calls; ++c) {
    const auto& call = packed.plan.calls[c];
    const std::int64_t offset = packed.offsets[c], count = call.rows * call.length;
    parts.push_back(embed_call(encoder, packed, c,
                               one_lookup ? call_tokens[c]
                                          : encoder.embed_tokens->forward(packed.ids.narrow(0, offset, count)),
                               pooling));
  }
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 0);
}

// Rows in packed order back into input order: y[order[k]] = x[k]. Written as
// index_put (whose backward is a gather) rather than an index_select
// (whose backward scatters with index_add_, atomic adds on CUDA), so the
// gradient is deterministic on every device without relying on
// deterministic-mode substitutes.
torch::Tensor to_input_order(const torch::Tensor& packed_rows, const PackedTokens& packed) {
  return torch::zeros_like(packed_rows).index_put({packed.order}, packed_rows);
}

// GradCache's second pass: each call again, with a graph, back-propagated
// with its rows' cached gradient (grad_packed: [N, H] in packed order). The
// layers' gradients accumulate in .grad as usual; the token embeddings'
// gradient goes into the table's .grad in place (see step.h).
void backward_calls(model::EncoderImpl& encoder, const PackedTokens& packed, model::Pooling pooling,
                    const torch::Tensor& grad_packed, GradientBuckets* final_backward) {
  torch::Tensor& table = encoder.embed_tokens->weight;
  const torch::Tensor table_values = table.detach();
  for (std::size_t c = 0; c < packed.plan.calls.size(); ++c) {
    const auto& call = packed.plan.calls[c];
    const torch::Tensor ids = packed.ids.narrow(0, packed.offsets[c], call.rows * call.length);
    torch::Tensor tokens = torch::embedding(table_values, ids).requires_grad_(table.requires_grad());
    const torch::Tensor rows = embed_call(encoder, packed, c, tokens, pooling);
    if (final_backward && c + 1 == packed.plan.calls.size()) final_backward->arm();
    rows.backward(grad_packed.narrow(0, call.first, call.rows));
    if (!table.requires_grad()) continue;
    if (!table.grad().defined()) table.mutable_grad() = torch::zeros_like(table);
    table.mutable_grad().index_put_({ids}, tokens.grad(), /*accumulate=*/true);
  }
}

}  // namespace

torch::Tensor embed_for_training(const model::EncoderImpl& encoder, const TokenBatch& batch, model::Pooling pooling,
                                 const CallOptions& calls) {
  const PackedTokens packed = pack_tokens(encoder, {&batch}, calls);
  return to_input_order(embed_packed_order(encoder, packed, pooling), packed);
}

namespace {

loss::LossOutput detach_total(loss::LossOutput out) {
  out.total = out.total.detach();
  return out;
}

}  // namespace

loss::LossOutput forward_backward(model::EncoderImpl& encoder, const TrainBatch& batch, model::Pooling pooling,
                                  const loss::LossOptions& loss_options, const CallOptions& calls,
                                  torch::Generator generator, double loss_scale, bool bf16_autocast,
                                  DataParallel* parallel, GradientBuckets* final_backward) {
  // Queries and passages share the calls: a call is filled by length, not by role.
  const PackedTokens packed = pack_tokens(encoder, {&batch.queries, &batch.passages}, calls);
  const std::int64_t nq = batch.queries.ids.size(0), np = batch.passages.ids.size(0);
  torch::Tensor all;
  {
    std::optional<torch::NoGradGuard> no_grad;
    if (calls.grad_cache) no_grad.emplace();
    model::Autocast autocast(encoder.device(), bf16_autocast);
    all = to_input_order(embed_packed_order(encoder, packed, pooling), packed);
  }
  torch::Tensor q = all.narrow(0, 0, nq), p = all.narrow(0, nq, np);
  if (parallel) {
    q = parallel->all_gather_rows(q);
    p = parallel->all_gather_rows(p);
  }
  if (!calls.grad_cache) {
    auto out = loss::compute_loss(q, p, batch.info, loss_options, generator);
    if (final_backward) final_backward->arm();
    (out.total * loss_scale).backward();
    return detach_total(std::move(out));
  }
  q = q.detach().requires_grad_(true);
  p = p.detach().requires_grad_(true);
  auto out = loss::compute_loss(q, p, batch.info, loss_options, generator);
  (out.total * loss_scale).backward();
  const std::int64_t r = parallel ? parallel->rank() : 0;
  const torch::Tensor local_grad = torch::cat({q.grad().detach().narrow(0, r * nq, nq),
                                               p.grad().detach().narrow(0, r * np, np)}, 0);
  model::Autocast autocast(encoder.device(), bf16_autocast);
  backward_calls(encoder, packed, pooling, local_grad.index_select(0, packed.order), final_backward);
  return detach_total(std::move(out));
}

TrainBatch build_batch(const Dataset& data, const std::vector<std::size_t>& indices, std::int64_t num_negatives,
                       bool with_scores, std::mt19937_64& rng, const text::Tokenizer& tokenizer,
                       std::int64_t query_max_length, std::int64_t passage_max_length,
                       const PromptTokenCount& prompt_tokens, double bpe_dropout,
                       const PromptTokenCount& prompt_model_ids) {
  std::vector<std::string> queries, passages, query_sources, passage_sources, types, batch_prompts;
  std::vector<std::int64_t> query_pool_from;
  TextDropout query_dropout, passage_dropout;
  std::vector<double> scores;
  for (auto index : indices) {
    auto group = sample_group(data, index, num_negatives, with_scores, rng);
    const Example& ex = data.examples[index];
    queries.push_back(std::move(group.query));
    query_sources.push_back(ex.source + " (query)");
    batch_prompts.push_back(ex.prompt);
    if (prompt_tokens) query_pool_from.push_back(ex.prompt.empty() ? 0 : prompt_tokens(ex.prompt));
    if (bpe_dropout > 0) {
      if (!ex.prompt.empty() && !prompt_model_ids)
        throw InternalError("build_batch: BPE dropout on a query with a prompt needs prompt_model_ids");
      query_dropout.keep_leading.push_back(
          ex.prompt.empty() ? 0 : static_cast<std::size_t>(prompt_model_ids(ex.prompt)));
    }
    for (auto& p : group.passages) {
      passages.push_back(std::move(p));
      passage_sources.push_back(ex.source + " (passage)");
    }
    scores.insert(scores.end(), group.teacher_scores.begin(), group.teacher_scores.end());
    types.push_back(ex.type);
    if (num_negatives <= 0 && !loss::in_batch_negatives_for_type(ex.type))
      throw FormatError(ex.source + ": a '" + ex.type +
                        "' group is scored against its own group only, which has no negative without hard "
                        "negatives (--num-negatives 0, e.g. --stage pretrain)");
  }
  if (bpe_dropout > 0) {
    query_dropout.p = passage_dropout.p = bpe_dropout;
    query_dropout.seed = rng();
    passage_dropout.seed = rng();
  }
  TrainBatch batch;
  batch.queries = tokenize_batch(tokenizer, queries, query_max_length, query_sources, query_dropout);
  if (std::any_of(query_pool_from.begin(), query_pool_from.end(), [](std::int64_t n) { return n > 0; })) {
    for (std::size_t i = 0; i < query_pool_from.size(); ++i)
      if (query_pool_from[i] >= batch.queries.lengths[i])
        throw FormatError(query_sources[i] + ": the query's " + std::to_string(batch.queries.lengths[i]) +
                          " tokens (--query-max-length " + std::to_string(query_max_length) +
                          ") are all instruction, which the pooling leaves out (include_prompt=false): nothing "
                          "of the query is left to pool");
    batch.queries.pool_from = std::move(query_pool_from);
  }
  batch.passages = tokenize_batch(tokenizer, passages, passage_max_length, passage_sources, passage_dropout);
  batch.query_texts = std::move(queries);
  batch.query_prompts = std::move(batch_prompts);
  batch.passage_texts = std::move(passages);
  batch.query_sources = std::move(query_sources);
  batch.passage_sources = std::move(passage_sources);
  batch.info.group_size = 1 + std::max<std::int64_t>(0, num_negatives);
  batch.info.in_batch = loss::in_batch_mask(types, torch::kCPU);
  batch.info.duplicates = loss::duplicate_positives(batch.passage_texts, batch.info.group_size);
  if (with_scores)
    batch.info.teacher_scores = torch::tensor(scores, torch::kDouble)
                                    .reshape({static_cast<std::int64_t>(indices.size()), batch.info.group_size});
  return batch;
}

Schedule parse_schedule(const std::string& name) {
  if (name == "linear") return Schedule::kLinear;
  if (name == "cosine") return Schedule::kCosine;
  if (name == "constant") return Schedule::kConstant;
  throw UsageError("--schedule must be linear, cosine or constant, got '" + name + "'");
}

double learning_rate_at(std::int64_t step, std::int64_t total, std::int64_t warmup, double peak, Schedule schedule) {
  if (step < warmup) return peak * static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
  if (schedule == Schedule::kConstant) return peak;
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(std::max<std::int64_t>(1, total - warmup));
  if (schedule == Schedule::kLinear) return peak * std::max(0.0, 1.0 - progress);
  return peak * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_(foreach=True):
// one multi-tensor norm, and with a limit one multi-tensor scale by
// min(1, max_norm / (norm + 1e-6)), all on the device: no host
// synchronisation (LibTorch's C++ clip_grad_norm_ reads the norm back to
// decide). Without a limit nothing is scaled. Returns the total norm (0-dim).
torch::Tensor clip_gradients(const std::vector<torch::Tensor>& params, std::optional<double> max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) {
    // On the parameters' device, as the norm would be: the caller stacks it
    // with the step's other device-side metrics for one read-back.
    const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params.front().device();
    return torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device));
  }
  const torch::Tensor norm = torch::stack(at::_foreach_norm(grads, 2)).norm(2);
  if (max_norm) {
    const torch::Tensor coef = (*max_norm / (norm + 1e-6)).clamp_max(1.0);
    at::_foreach_mul_(grads, coef);
  }
  return norm;
}

}  // namespace kalm::train
