#include "kalm/loss/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string_view>
#include <unordered_map>
#include <sstream>
#include <utility>

#include "kalm/error.h"
#include "kalm/loss/mixing.h"
#include "kalm/model/device.h"

namespace kalm::loss {
namespace {

namespace F = torch::nn::functional;

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string sizes_of(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

// Input checks read host tensors on the host (the batch's in-batch mask and
// teacher scores come from the data loader): a .item() on the device would
// make the host wait for every kernel queued before it.
bool all_true_on_host_if_possible(const torch::Tensor& mask) {
  if (!mask.is_cpu()) return mask.all().item<bool>();
  const torch::Tensor c = mask.to(torch::kBool).contiguous();
  const bool* p = c.data_ptr<bool>();
  return std::all_of(p, p + c.numel(), [](bool b) { return b; });
}

bool all_finite_on_host_if_possible(const torch::Tensor& t) {
  if (!t.is_cpu()) return torch::isfinite(t).all().item<bool>();
  const torch::Tensor c = t.to(torch::kDouble).contiguous();
  const double* p = c.data_ptr<double>();
  return std::all_of(p, p + c.numel(), [](double v) { return std::isfinite(v); });
}

std::string num(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

void require_positive(double value, const char* field) {
  if (!(std::isfinite(value) && value > 0))
    throw UsageError(std::string("loss option ") + field + " must be a finite number > 0 (got " + num(value) + ")");
}

void require_non_negative(double value, const char* field) {
  if (!(std::isfinite(value) && value >= 0))
    throw UsageError(std::string("loss option ") + field + " must be a finite number >= 0 (got " + num(value) + ")");
}

bool is_floating(const torch::Tensor& t) {
  auto s = t.scalar_type();
  return s == torch::kFloat || s == torch::kDouble || s == torch::kHalf || s == torch::kBFloat16;
}

torch::Tensor unit_rows(const torch::Tensor& x) {
  return F::normalize(x, F::NormalizeFuncOptions().p(2).dim(1));
}

// Everything about the batch that does not depend on the Matryoshka dim.
struct Batch {
  std::int64_t b = 0, g = 0, m = 0, n = 0;
  torch::Tensor targets;     // [B] int64: i·G
  torch::Tensor pos_onehot;  // [B, N] bool: the target column
  torch::Tensor masked;      // [B, N] bool: -inf columns; undefined when every row has in-batch negatives
  torch::Tensor group_cols;  // [B, G] int64: i·G + g
  torch::Tensor teacher_p;   // [B, G] P_t; undefined without teacher scores
  torch::Tensor teacher_logp;
  torch::Tensor back_masked;  // [B, B] bool: query j left out of positive i's row (symmetric)
  torch::Tensor back_weight;  // [B] float: 1 / (rows with in-batch negatives) for those rows, else 0
  bool mixing = false;
  std::int64_t synthetic = 0;  // K columns appended per row
  PairwiseDraws draws;         // pair-wise only
};

struct DimTerms {
  torch::Tensor infonce, focal, kl, loss;  // kl undefined without teacher scores
  torch::Tensor backward;                  // undefined unless symmetric
  torch::Tensor p_pos, accuracy, focal_weight;
};

DimTerms dim_terms(const torch::Tensor& q, const torch::Tensor& p, const Batch& bt, const LossOptions& o) {
  DimTerms r;
  const double tau = o.temperature;
  auto scores = torch::matmul(q, p.t());  // [B, N] cosine similarities
  auto logits = scores / tau;
  if (bt.masked.defined()) logits = logits.masked_fill(bt.masked, -kInf);
  auto pos_logit = logits.gather(1, bt.targets.unsqueeze(1)).squeeze(1);

  {
    torch::NoGradGuard no_grad;
    auto best_negative = std::get<0>(logits.masked_fill(bt.pos_onehot, -kInf).max(1));
    r.accuracy = pos_logit.gt(best_negative).to(q.scalar_type()).mean();
  }

  torch::Tensor full = logits;
  torch::Tensor full_pos = bt.pos_onehot;
  if (bt.mixing) {
    const auto d = q.size(1);
    auto negatives = p.view({bt.b, bt.g, d}).narrow(1, 1, bt.m);  // [B, M, d]
    torch::Tensor synthetic = o.mix == MixMode::kPairwise
                                  ? mix_pairwise(negatives, bt.draws)
                                  : mix_listwise(q, negatives, o.mix_temperature.value_or(o.temperature));
    if (o.mix_detach) synthetic = synthetic.detach();
    auto syn_logits = torch::bmm(synthetic, q.unsqueeze(2)).squeeze(2) / tau;  // [B, K]
    full = torch::cat({logits, syn_logits}, 1);
    full_pos = torch::cat({bt.pos_onehot, torch::zeros({bt.b, bt.synthetic}, bt.pos_onehot.options())}, 1);
  }

  auto lse_all = torch::logsumexp(full, 1);
  auto nll = lse_all - pos_logit;  // −log p_i
  r.infonce = nll.mean();
  r.p_pos = torch::exp(-nll.detach()).mean();
  if (o.focal_gamma > 0) {
    // 1 − p_i as the negatives' softmax mass keeps w finite and its gradient
    // bounded when p_i rounds to 1 (1 − p would be 0 and (1 − p)^γ' infinite).
    auto log_one_minus_p = torch::logsumexp(full.masked_fill(full_pos, -kInf), 1) - lse_all;
    auto w = torch::exp(o.focal_gamma * log_one_minus_p);
    r.focal_weight = w.detach().mean();
    if (o.focal_detach) w = w.detach();
    r.focal = (w * nll).mean();
  } else {
    r.focal = r.infonce;  // γ = 0 is plain InfoNCE, bit for bit
    r.focal_weight = torch::ones({}, q.options());
  }

  if (o.symmetric) {
    // Each positive against every query: column i of scores[:, targets].
    auto back = scores.index_select(1, bt.targets) / tau;  // [B (query j), B (positive i)]
    if (bt.back_masked.defined()) back = back.masked_fill(bt.back_masked, -kInf);
    auto nll_back = torch::logsumexp(back, 0) - back.diagonal();
    r.backward = (nll_back * bt.back_weight).sum();
    r.focal = 0.5 * (r.focal + r.backward);
  }

  if (bt.teacher_p.defined()) {
    torch::Tensor student_logp;
    if (o.distill_scope == DistillScope::kGroup) {
      student_logp = torch::log_softmax(scores.gather(1, bt.group_cols) / o.student_temperature, 1);
    } else {
      auto row = scores / o.student_temperature;
      if (bt.masked.defined()) row = row.masked_fill(bt.masked, -kInf);
      student_logp = torch::log_softmax(row, 1).gather(1, bt.group_cols);
    }
    // batchmean: summed over the row, averaged over rows (torch KLDivLoss).
    r.kl = (bt.teacher_p * (bt.teacher_logp - student_logp)).sum(1).mean();
  }

  if (o.distill_only)
    r.loss = o.distill_weight * r.kl;
  else if (r.kl.defined())
    r.loss = r.focal + o.distill_weight * r.kl;
  else
    r.loss = r.focal;
  return r;
}

}  // namespace

void validate_options(const LossOptions& o) {
  require_positive(o.temperature, "temperature");
  require_non_negative(o.focal_gamma, "focal_gamma");
  if (o.mix_count < 1)
    throw UsageError("loss option mix_count must be >= 1 (got " + std::to_string(o.mix_count) + ")");
  if (o.mix == MixMode::kListwise && o.mix_count != 1)
    throw UsageError("loss option mix_count must be 1 with list-wise mixing (its mixture is deterministic; got " +
                     std::to_string(o.mix_count) + ")");
  require_positive(o.mix_beta_a, "mix_beta_a");
  require_positive(o.mix_beta_b, "mix_beta_b");
  if (o.mix_temperature) require_positive(*o.mix_temperature, "mix_temperature");
  if (o.matryoshka_dims.size() != o.matryoshka_weights.size())
    throw UsageError("loss options matryoshka_dims and matryoshka_weights differ in length (" +
                     std::to_string(o.matryoshka_dims.size()) + " vs " +
                     std::to_string(o.matryoshka_weights.size()) + ")");
  std::set<std::int64_t> seen;
  double weight_sum = 0;
  for (std::size_t i = 0; i < o.matryoshka_dims.size(); ++i) {
    const auto d = o.matryoshka_dims[i];
    if (d < 1) throw UsageError("loss option matryoshka_dims: dim " + std::to_string(d) + " must be >= 1");
    if (!seen.insert(d).second)
      throw UsageError("loss option matryoshka_dims: dim " + std::to_string(d) + " appears twice");
    require_non_negative(o.matryoshka_weights[i], "matryoshka_weights");
    weight_sum += o.matryoshka_weights[i];
  }
  if (!o.matryoshka_dims.empty() && weight_sum <= 0)
    throw UsageError("loss option matryoshka_weights are all zero: nothing would be trained");
  require_non_negative(o.distill_weight, "distill_weight");
  require_positive(o.teacher_temperature, "teacher_temperature");
  require_positive(o.student_temperature, "student_temperature");
  if (o.distill_only && o.distill_weight == 0)
    throw UsageError("loss option distill_only with distill_weight 0: nothing would be trained");
}

LossOutput compute_loss(const torch::Tensor& queries, const torch::Tensor& passages, const BatchInfo& batch,
                        const LossOptions& options, torch::Generator generator) {
  validate_options(options);
  if (!queries.defined() || queries.dim() != 2)
    throw UsageError("loss: queries must be a 2-D tensor [B, D] (got " + sizes_of(queries) + ")");
  if (!passages.defined() || passages.dim() != 2)
    throw UsageError("loss: passages must be a 2-D tensor [B·G, D] (got " + sizes_of(passages) + ")");
  if (!is_floating(queries) || !is_floating(passages))
    throw UsageError("loss: queries and passages must be floating point (f16, bf16, f32 or f64)");
  if (queries.device() != passages.device())
    throw UsageError("loss: queries and passages are on different devices (" + queries.device().str() + ", " +
                     passages.device().str() + ")");
  Batch bt;
  bt.b = queries.size(0);
  const auto dim = queries.size(1);
  bt.g = batch.group_size;
  bt.n = passages.size(0);
  if (bt.b < 1) throw UsageError("loss: the batch has no queries");
  if (dim < 1) throw UsageError("loss: embeddings have no columns (queries " + sizes_of(queries) + ")");
  if (bt.g < 1) throw UsageError("loss: group_size must be >= 1 (got " + std::to_string(bt.g) + ")");
  if (passages.size(1) != dim)
    throw UsageError("loss: queries " + sizes_of(queries) + " and passages " + sizes_of(passages) +
                     " differ in embedding size");
  if (bt.n != bt.b * bt.g)
    throw UsageError("loss: passages " + sizes_of(passages) + " must have B·G = " + std::to_string(bt.b) + "·" +
                     std::to_string(bt.g) + " = " + std::to_string(bt.b * bt.g) + " rows");
  bt.m = bt.g - 1;

  std::vector<std::int64_t> dims = options.matryoshka_dims;
  std::vector<double> weights = options.matryoshka_weights;
  if (dims.empty()) {
    dims = {dim};
    weights = {1.0};
  }
  std::int64_t largest = 0;
  for (auto d : dims) {
    if (d > dim)
      throw UsageError("loss option matryoshka_dims: dim " + std::to_string(d) + " exceeds the embedding size " +
                       std::to_string(dim));
    largest = std::max(largest, d);
  }
  if (largest != dim)
    throw UsageError("loss option matryoshka_dims: the largest dim (" + std::to_string(largest) +
                     ") must be the embedding size " + std::to_string(dim) +
                     " (set the dims for this model, e.g. with set_recipe_matryoshka)");

  const auto device = queries.device();
  const auto ctype =
      (queries.scalar_type() == torch::kDouble || passages.scalar_type() == torch::kDouble) ? torch::kDouble
                                                                                           : torch::kFloat;
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device);

  // In-batch policy per row.
  torch::Tensor in_batch;
  bool all_in_batch = true;
  if (batch.in_batch.defined()) {
    if (batch.in_batch.dim() != 1 || batch.in_batch.size(0) != bt.b || batch.in_batch.scalar_type() != torch::kBool)
      throw UsageError("loss: in_batch must be a [B] = [" + std::to_string(bt.b) + "] bool tensor (got " +
                       sizes_of(batch.in_batch) + " " + std::string(c10::toString(batch.in_batch.scalar_type())) +
                       ")");
    all_in_batch = all_true_on_host_if_possible(batch.in_batch);
    in_batch = model::upload(batch.in_batch, device);
  }
  // Every row needs a negative: its own hard negatives (G >= 2) or in-batch columns (N >= 2).
  if (bt.g == 1) {
    if (bt.n == 1)
      throw UsageError("loss: a batch of 1 query with group size 1 has no negatives (the loss would be 0)");
    if (!all_in_batch) {
      auto first_off = torch::nonzero(batch.in_batch.logical_not()).flatten()[0].item<std::int64_t>();
      throw UsageError("loss: row " + std::to_string(first_off) +
                       " has no negatives: group size 1 (no hard negatives) and in-batch negatives off");
    }
  }

  bt.targets = torch::arange(bt.b, long_opts) * bt.g;
  auto columns = torch::arange(bt.n, long_opts);
  bt.pos_onehot = columns.unsqueeze(0).eq(bt.targets.unsqueeze(1));
  if (!all_in_batch) {
    auto own_group = torch::div(columns, bt.g, "floor").unsqueeze(0).eq(torch::arange(bt.b, long_opts).unsqueeze(1));
    bt.masked = own_group.logical_not().logical_and(in_batch.logical_not().unsqueeze(1));
  }
  bt.group_cols = bt.targets.unsqueeze(1) + torch::arange(bt.g, long_opts).unsqueeze(0);

  // False negatives: copies of a row's positive leave that row.
  double masked_duplicates = 0;
  torch::Tensor duplicates_on_device;
  if (batch.duplicates.defined()) {
    const auto& dup = batch.duplicates;
    if (dup.dim() != 2 || dup.size(0) != bt.b || dup.size(1) != bt.n || dup.scalar_type() != torch::kBool)
      throw UsageError("loss: duplicates must be a [B, B·G] = [" + std::to_string(bt.b) + ", " +
                       std::to_string(bt.n) + "] bool tensor (got " + sizes_of(dup) + " " +
                       std::string(c10::toString(dup.scalar_type())) + ")");
    if (options.mask_duplicates) {
      if (dup.is_cpu()) {
        const torch::Tensor c = dup.contiguous();
        masked_duplicates = static_cast<double>(std::count(c.data_ptr<bool>(), c.data_ptr<bool>() + c.numel(), true));
      } else {
        masked_duplicates = dup.sum().item<double>();
      }
      if (masked_duplicates > 0) {
        auto on_device = model::upload(dup, device).logical_and(bt.pos_onehot.logical_not());
        bt.masked = bt.masked.defined() ? bt.masked.logical_or(on_device) : on_device;
        duplicates_on_device = on_device;
      }
    }
  }

  if (options.symmetric) {
    // Positive i against every query j: a query of a row scored in-group only
    // (same-class texts) or whose positive is a copy of p_i is no negative.
    torch::Tensor off;
    if (!all_in_batch) off = in_batch.logical_not().unsqueeze(1).expand({bt.b, bt.b});
    if (duplicates_on_device.defined()) {
      auto copies = duplicates_on_device.index_select(1, bt.targets);  // [j, i]: q_j's positive is a copy of p_i
      off = off.defined() ? off.logical_or(copies) : copies;
    }
    if (off.defined()) {
      const auto diagonal = torch::eye(bt.b, torch::TensorOptions().dtype(torch::kBool).device(device));
      bt.back_masked = off.logical_and(diagonal.logical_not());
    }
    // The mean over rows with in-batch negatives (a row without has no other query to rank against).
    auto rows = all_in_batch ? torch::ones({bt.b}, torch::TensorOptions().dtype(ctype).device(device))
                             : in_batch.to(ctype);
    bt.back_weight = rows / rows.sum().clamp_min(1.0);
  }

  if (batch.teacher_scores.defined()) {
    const auto& t = batch.teacher_scores;
    if (t.dim() != 2 || t.size(0) != bt.b || t.size(1) != bt.g)
      throw UsageError("loss: teacher_scores must be [B, G] = [" + std::to_string(bt.b) + ", " +
                       std::to_string(bt.g) + "] (got " + sizes_of(t) + ")");
    if (!is_floating(t)) throw UsageError("loss: teacher_scores must be floating point");
    if (!all_finite_on_host_if_possible(t.detach()))
      throw UsageError("loss: teacher_scores contain NaN or infinite values");
    auto teacher = model::upload(t.detach(), device).to(ctype);
    bt.teacher_logp = torch::log_softmax(teacher / options.teacher_temperature, 1);
    bt.teacher_p = bt.teacher_logp.exp();
  } else if (options.distill_only) {
    throw UsageError("loss option distill_only needs teacher scores (BatchInfo::teacher_scores is empty)");
  }

  bt.mixing = options.mix != MixMode::kNone && bt.m >= 2;
  if (bt.mixing) {
    if (options.mix == MixMode::kPairwise) {
      bt.synthetic = options.mix_count;
      if (!generator.defined())
        throw UsageError("loss: pair-wise hard-negative mixing needs a seeded torch::Generator (none was given)");
      bt.draws = draw_pairwise_mixing(bt.b, bt.m, options.mix_count, options.mix_beta_a, options.mix_beta_b,
                                      generator);
      // Drawn on the host from a CPU generator; checked there (mixing.h) and
      // uploaded without waiting.
      check_pairwise_draws(bt.draws, bt.b, bt.m);
      bt.draws.first = model::upload(bt.draws.first, device);
      bt.draws.second = model::upload(bt.draws.second, device);
      bt.draws.lambda = model::upload(bt.draws.lambda, device).to(ctype);
      bt.draws.checked = true;
    } else {
      bt.synthetic = 1;
    }
  }

  auto q = queries.to(ctype);
  auto p = passages.to(ctype);

  LossOutput out;
  torch::Tensor total, infonce_sum, focal_sum, kl_sum, backward_sum;
  auto accumulate = [](torch::Tensor& acc, const torch::Tensor& value) {
    acc = acc.defined() ? acc + value : value;
  };
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const auto d = dims[i];
    const double c = weights[i];
    auto qd = q.narrow(1, 0, d);
    auto pd = p.narrow(1, 0, d);
    if (!(d == dim && options.inputs_normalized)) {
      qd = unit_rows(qd);
      pd = unit_rows(pd);
    }
    DimTerms r = dim_terms(qd, pd, bt, options);
    accumulate(total, c * r.loss);
    accumulate(infonce_sum, c * r.infonce.detach());
    accumulate(focal_sum, c * r.focal.detach());
    const std::string at = "@" + std::to_string(d);
    out.components["infonce" + at] = r.infonce.detach();
    out.components["focal" + at] = r.focal.detach();
    out.components["loss" + at] = r.loss.detach();
    if (r.backward.defined()) {
      accumulate(backward_sum, c * r.backward.detach());
      out.components["backward" + at] = r.backward.detach();
    }
    if (r.kl.defined()) {
      accumulate(kl_sum, c * r.kl.detach());
      out.components["kl" + at] = r.kl.detach();
    }
    out.metrics["p_pos" + at] = r.p_pos;
    out.metrics["accuracy" + at] = r.accuracy;
    out.metrics["focal_weight" + at] = r.focal_weight;
    if (d == dim) {
      out.metrics["p_pos"] = r.p_pos;
      out.metrics["accuracy"] = r.accuracy;
      out.metrics["focal_weight"] = r.focal_weight;
    }
  }
  out.total = total;
  out.components["infonce"] = infonce_sum;
  out.components["focal"] = focal_sum;
  if (kl_sum.defined()) out.components["kl"] = kl_sum;
  if (backward_sum.defined()) out.components["backward"] = backward_sum;
  out.metrics["synthetic_negatives"] =
      torch::full({}, static_cast<double>(bt.mixing ? bt.synthetic : 0), q.options().requires_grad(false));
  out.metrics["masked_duplicates"] = torch::full({}, masked_duplicates, q.options().requires_grad(false));
  return out;
}

torch::Tensor duplicate_positives(const std::vector<std::string>& passage_texts, std::int64_t group_size) {
  if (group_size < 1)
    throw UsageError("duplicate_positives: group size must be >= 1 (got " + std::to_string(group_size) + ")");
  const auto n = static_cast<std::int64_t>(passage_texts.size());
  if (n % group_size != 0)
    throw UsageError("duplicate_positives: " + std::to_string(n) + " passages are not groups of " +
                     std::to_string(group_size));
  const std::int64_t b = n / group_size;
  // Text -> the first column holding it, then each column's text class; a
  // row's duplicates are the other columns of its positive's class.
  std::unordered_map<std::string_view, std::int64_t> first_column;
  first_column.reserve(static_cast<std::size_t>(n));
  std::vector<std::int64_t> text_class(static_cast<std::size_t>(n));
  std::vector<std::int64_t> class_size(static_cast<std::size_t>(n), 0);
  for (std::int64_t c = 0; c < n; ++c) {
    auto [it, inserted] = first_column.emplace(passage_texts[static_cast<std::size_t>(c)], c);
    text_class[static_cast<std::size_t>(c)] = it->second;
    ++class_size[static_cast<std::size_t>(it->second)];
  }
  bool any = false;
  for (std::int64_t i = 0; i < b && !any; ++i)
    any = class_size[static_cast<std::size_t>(text_class[static_cast<std::size_t>(i * group_size)])] > 1;
  if (!any) return {};
  auto mask = torch::zeros({b, n}, torch::TensorOptions().dtype(torch::kBool));
  auto acc = mask.accessor<bool, 2>();
  for (std::int64_t i = 0; i < b; ++i) {
    const std::int64_t own = i * group_size;
    const std::int64_t cls = text_class[static_cast<std::size_t>(own)];
    if (class_size[static_cast<std::size_t>(cls)] < 2) continue;
    for (std::int64_t c = 0; c < n; ++c)
      if (c != own && text_class[static_cast<std::size_t>(c)] == cls) acc[i][c] = true;
  }
  return mask;
}

bool in_batch_negatives_for_type(std::string_view type) {
  if (type.empty() || type == "retrieval" || type == "sts" || type == "reranking" || type == "pair" ||
      type == "bitext")
    return true;
  if (type == "classification" || type == "clustering") return false;
  throw UsageError("unknown record type '" + std::string(type) +
                   "' (expected retrieval, sts, classification, clustering, reranking, pair or bitext)");
}

torch::Tensor in_batch_mask(const std::vector<std::string>& types, torch::Device device) {
  auto mask = torch::empty({static_cast<std::int64_t>(types.size())}, torch::TensorOptions().dtype(torch::kBool));
  auto* data = mask.data_ptr<bool>();
  for (std::size_t i = 0; i < types.size(); ++i) {
    try {
      data[i] = in_batch_negatives_for_type(types[i]);
    } catch (const UsageError& e) {
      throw UsageError("batch row " + std::to_string(i) + ": " + e.what());
    }
  }
  return mask.to(device);
}

void set_recipe_matryoshka(LossOptions& options, std::int64_t dim) {
  if (dim < 1) throw UsageError("set_recipe_matryoshka: embedding size must be >= 1 (got " + std::to_string(dim) + ")");
  if (dim == 896) {
    options.matryoshka_dims = {896, 512, 256, 128, 64};
    options.matryoshka_weights = {1.0, 0.3, 0.2, 0.1, 0.1};
  } else if (dim == 3840) {
    options.matryoshka_dims = {3840, 2048, 1024, 512, 256, 128, 64};
    options.matryoshka_weights = {1.0, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1};
  } else {
    options.matryoshka_dims = {dim};
    options.matryoshka_weights = {1.0};
  }
}

}  // namespace kalm::loss
