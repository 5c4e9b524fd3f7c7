#include "kalm/train/step.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kalm/error.h"
#include "kalm/model/device.h"

namespace kalm::train {

TokenBatch tokenize_batch(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                          std::int64_t max_length, const std::vector<std::string>& sources) {
  if (max_length < 1) throw UsageError("maximum length must be at least 1 token, got " + std::to_string(max_length));
  text::EncodeOptions eo;
  eo.add_special_tokens = true;
  eo.max_length = static_cast<std::size_t>(max_length);
  auto encodings = tokenizer.encode_batch(texts, eo);
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
  }
  return out;
}

TokenBatch slice_rows(const TokenBatch& batch, std::int64_t begin, std::int64_t end) {
  TokenBatch out;
  auto mask = batch.mask.slice(0, begin, end);
  const auto lengths = mask.sum(1);
  const std::int64_t longest = std::max<std::int64_t>(1, lengths.max().item<std::int64_t>());
  out.mask = mask.slice(1, 0, longest).contiguous();
  out.ids = batch.ids.slice(0, begin, end).slice(1, 0, longest).contiguous();
  out.tokens = lengths.sum().item<std::int64_t>();
  return out;
}

torch::Tensor embed_for_training(const model::EncoderImpl& encoder, const TokenBatch& batch, model::Pooling pooling) {
  const std::int64_t n = batch.ids.size(0);
  if (n <= kLengthBucketRows) {
    auto hidden = encoder.forward(batch.ids, batch.mask);
    return model::pool(hidden, batch.mask, pooling);
  }
  // Stable sort by length, so the buckets (and the result) are deterministic.
  const auto lengths_tensor = batch.mask.sum(1).to(torch::kCPU).contiguous();
  const std::int64_t* lengths = lengths_tensor.data_ptr<std::int64_t>();
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return lengths[a] < lengths[b]; });
  std::vector<std::int64_t> inverse(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) inverse[static_cast<std::size_t>(order[i])] = static_cast<std::int64_t>(i);
  const auto ids = encoder.checked_input_ids(batch.ids, batch.mask);  // on the encoder's device
  const auto mask = batch.mask.to(ids.device());
  struct Bucket {
    torch::Tensor mask;
    std::int64_t rows, longest;
  };
  std::vector<Bucket> buckets;
  std::vector<torch::Tensor> bucket_ids;
  for (std::int64_t s = 0; s < n; s += kLengthBucketRows) {
    const std::int64_t e = std::min(n, s + kLengthBucketRows);
    const std::int64_t longest = std::max<std::int64_t>(1, lengths[order[static_cast<std::size_t>(e - 1)]]);
    const auto rows = torch::tensor(std::vector<std::int64_t>(order.begin() + s, order.begin() + e), torch::kLong)
                          .to(ids.device());
    bucket_ids.push_back(ids.index_select(0, rows).slice(1, 0, longest).reshape({-1}));
    buckets.push_back({mask.index_select(0, rows).slice(1, 0, longest).contiguous(), e - s, longest});
  }
  // One table lookup for every bucket: the embedding gradient is a dense
  // [vocab, hidden] tensor, built once per lookup.
  const auto tokens = encoder.embed_tokens->forward(torch::cat(bucket_ids, 0));
  std::vector<torch::Tensor> parts;
  std::int64_t offset = 0;
  for (const auto& b : buckets) {
    const auto x = tokens.narrow(0, offset, b.rows * b.longest).view({b.rows, b.longest, -1});
    offset += b.rows * b.longest;
    parts.push_back(model::pool(encoder.forward_from_embeddings(x, b.mask), b.mask, pooling));
  }
  return torch::cat(parts, 0).index_select(0, torch::tensor(inverse, torch::kLong).to(tokens.device()));
}

namespace {

torch::Tensor embed_chunked(const model::EncoderImpl& encoder, const TokenBatch& batch, model::Pooling pooling,
                            std::int64_t chunk) {
  std::vector<torch::Tensor> parts;
  const auto n = batch.ids.size(0);
  for (std::int64_t s = 0; s < n; s += chunk)
    parts.push_back(embed_for_training(encoder, slice_rows(batch, s, std::min(n, s + chunk)), pooling));
  return torch::cat(parts, 0);
}

void backward_chunked(const model::EncoderImpl& encoder, const TokenBatch& batch, model::Pooling pooling,
                      std::int64_t chunk, const torch::Tensor& grad) {
  const auto n = batch.ids.size(0);
  for (std::int64_t s = 0; s < n; s += chunk) {
    const auto e = std::min(n, s + chunk);
    auto emb = embed_for_training(encoder, slice_rows(batch, s, e), pooling);
    emb.backward(grad.slice(0, s, e));
  }
}

loss::LossOutput detach_total(loss::LossOutput out) {
  out.total = out.total.detach();
  return out;
}

}  // namespace

loss::LossOutput forward_backward(model::EncoderImpl& encoder, const TrainBatch& batch, model::Pooling pooling,
                                  const loss::LossOptions& loss_options, std::optional<std::int64_t> grad_cache_chunk,
                                  torch::Generator generator, double loss_scale, bool bf16_autocast,
                                  DataParallel* parallel) {
  if (!grad_cache_chunk) {
    torch::Tensor q, p;
    {
      model::Autocast autocast(encoder.device(), bf16_autocast);
      q = embed_for_training(encoder, batch.queries, pooling);
      p = embed_for_training(encoder, batch.passages, pooling);
    }
    if (parallel) {
      q = parallel->all_gather_rows(q);
      p = parallel->all_gather_rows(p);
    }
    auto out = loss::compute_loss(q, p, batch.info, loss_options, generator);
    (out.total * loss_scale).backward();
    return detach_total(std::move(out));
  }
  const std::int64_t chunk = *grad_cache_chunk;
  if (chunk < 1) throw UsageError("--grad-cache-chunk must be at least 1, got " + std::to_string(chunk));
  torch::Tensor q, p;
  {
    torch::NoGradGuard no_grad;
    model::Autocast autocast(encoder.device(), bf16_autocast);
    q = embed_chunked(encoder, batch.queries, pooling, chunk);
    p = embed_chunked(encoder, batch.passages, pooling, chunk);
  }
  const auto nq = q.size(0), np = p.size(0);
  if (parallel) {
    q = parallel->all_gather_rows(q);
    p = parallel->all_gather_rows(p);
  }
  q = q.detach().requires_grad_(true);
  p = p.detach().requires_grad_(true);
  auto out = loss::compute_loss(q, p, batch.info, loss_options, generator);
  (out.total * loss_scale).backward();
  const std::int64_t r = parallel ? parallel->rank() : 0;
  const auto q_grad = q.grad().detach().slice(0, r * nq, (r + 1) * nq);
  const auto p_grad = p.grad().detach().slice(0, r * np, (r + 1) * np);
  model::Autocast autocast(encoder.device(), bf16_autocast);
  backward_chunked(encoder, batch.queries, pooling, chunk, q_grad);
  backward_chunked(encoder, batch.passages, pooling, chunk, p_grad);
  return detach_total(std::move(out));
}

TrainBatch build_batch(const Dataset& data, const std::vector<std::size_t>& indices, std::int64_t num_negatives,
                       bool with_scores, std::mt19937_64& rng, const text::Tokenizer& tokenizer,
                       std::int64_t query_max_length, std::int64_t passage_max_length) {
  std::vector<std::string> queries, passages, query_sources, passage_sources, types;
  std::vector<double> scores;
  for (auto index : indices) {
    auto group = sample_group(data, index, num_negatives, with_scores, rng);
    const Example& ex = data.examples[index];
    queries.push_back(std::move(group.query));
    query_sources.push_back(ex.source + " (query)");
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
  TrainBatch batch;
  batch.queries = tokenize_batch(tokenizer, queries, query_max_length, query_sources);
  batch.passages = tokenize_batch(tokenizer, passages, passage_max_length, passage_sources);
  batch.query_texts = std::move(queries);
  batch.passage_texts = std::move(passages);
  batch.query_sources = std::move(query_sources);
  batch.passage_sources = std::move(passage_sources);
  batch.info.group_size = 1 + std::max<std::int64_t>(0, num_negatives);
  batch.info.in_batch = loss::in_batch_mask(types, torch::kCPU);
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
  if (grads.empty()) return torch::zeros({}, torch::kDouble);
  const torch::Tensor norm = torch::stack(at::_foreach_norm(grads, 2)).norm(2);
  if (max_norm) {
    const torch::Tensor coef = (*max_norm / (norm + 1e-6)).clamp_max(1.0);
    at::_foreach_mul_(grads, coef);
  }
  return norm;
}

}  // namespace kalm::train
