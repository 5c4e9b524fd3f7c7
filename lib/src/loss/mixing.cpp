#include "kalm/loss/mixing.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

#include "kalm/error.h"

namespace kalm::loss {
namespace {

namespace F = torch::nn::functional;

std::string sizes_of(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

torch::Tensor unit_rows_last(const torch::Tensor& x) {
  return F::normalize(x, F::NormalizeFuncOptions().p(2).dim(-1));
}

}  // namespace

PairwiseDraws draw_pairwise_mixing(std::int64_t rows, std::int64_t num_negatives, std::int64_t per_row,
                                   double beta_a, double beta_b, torch::Generator generator) {
  if (rows < 0) throw UsageError("pair-wise mixing: rows must be >= 0 (got " + std::to_string(rows) + ")");
  if (num_negatives < 2)
    throw UsageError("pair-wise mixing needs at least 2 hard negatives per query (got " +
                     std::to_string(num_negatives) + ")");
  if (per_row < 1)
    throw UsageError("pair-wise mixing: synthetic negatives per query must be >= 1 (got " +
                     std::to_string(per_row) + ")");
  if (!(std::isfinite(beta_a) && beta_a > 0 && std::isfinite(beta_b) && beta_b > 0)) {
    std::ostringstream os;
    os << "pair-wise mixing: Beta parameters must be finite and > 0 (got " << beta_a << ", " << beta_b << ")";
    throw UsageError(os.str());
  }
  if (!generator.defined())
    throw UsageError("pair-wise hard-negative mixing needs a seeded torch::Generator (none was given)");

  const auto device = generator.device();
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  const auto real_opts = torch::TensorOptions().dtype(torch::kDouble).device(device);
  PairwiseDraws d;
  d.first = torch::randint(num_negatives, {rows, per_row}, generator, long_opts);
  // Drawing the second index from the M−1 others and skipping over the first
  // makes (j, k) uniform over ordered pairs with j != k, without rejection loops.
  auto offset = torch::randint(num_negatives - 1, {rows, per_row}, generator, long_opts);
  d.second = offset + offset.ge(d.first).to(torch::kLong);
  auto x = at::_standard_gamma(torch::full({rows, per_row}, beta_a, real_opts), generator);
  auto y = at::_standard_gamma(torch::full({rows, per_row}, beta_b, real_opts), generator);
  auto sum = x + y;
  // Both Gamma draws can underflow to 0 only for tiny shape parameters; 0.5 is
  // the symmetric fallback instead of a NaN weight.
  d.lambda = torch::where(sum.gt(0), x / sum.clamp_min(1e-300), torch::full_like(sum, 0.5));
  return d;
}

namespace {

void check_draw_shapes(const PairwiseDraws& draws, std::int64_t b) {
  for (const auto* t : {&draws.first, &draws.second, &draws.lambda}) {
    if (!t->defined() || t->dim() != 2 || t->size(0) != b)
      throw UsageError("pair-wise mixing: draws must be [B, K] with B = " + std::to_string(b) + " (got " +
                       (t->defined() ? sizes_of(*t) : std::string("undefined")) + ")");
  }
  const auto k = draws.first.size(1);
  if (draws.second.size(1) != k || draws.lambda.size(1) != k)
    throw UsageError("pair-wise mixing: draws disagree on K (" + sizes_of(draws.first) + ", " +
                     sizes_of(draws.second) + ", " + sizes_of(draws.lambda) + ")");
  if (draws.first.scalar_type() != torch::kLong || draws.second.scalar_type() != torch::kLong)
    throw UsageError("pair-wise mixing: draw indices must be int64");
}

}  // namespace

void check_pairwise_draws(const PairwiseDraws& draws, std::int64_t b, std::int64_t m) {
  check_draw_shapes(draws, b);
  if (b * draws.first.size(1) == 0) return;
  // An out-of-range index would be a device-side assert on CUDA: check first.
  bool ok;
  if (draws.first.is_cpu() && draws.second.is_cpu()) {
    const auto first = draws.first.contiguous(), second = draws.second.contiguous();
    const std::int64_t* f = first.data_ptr<std::int64_t>();
    const std::int64_t* s = second.data_ptr<std::int64_t>();
    ok = std::all_of(f, f + first.numel(), [m](std::int64_t v) { return v >= 0 && v < m; }) &&
         std::all_of(s, s + second.numel(), [m](std::int64_t v) { return v >= 0 && v < m; });
  } else {
    const auto first = draws.first, second = draws.second.to(draws.first.device());
    ok = first.ge(0).logical_and(first.lt(m)).logical_and(second.ge(0)).logical_and(second.lt(m)).all().item<bool>();
  }
  if (!ok) throw UsageError("pair-wise mixing: draw indices must lie in [0, " + std::to_string(m) + ")");
}

torch::Tensor mix_pairwise(const torch::Tensor& negatives, const PairwiseDraws& draws) {
  if (!negatives.defined() || negatives.dim() != 3)
    throw UsageError("pair-wise mixing: negatives must be [B, M, d] (got " +
                     (negatives.defined() ? sizes_of(negatives) : std::string("undefined")) + ")");
  const auto b = negatives.size(0);
  const auto m = negatives.size(1);
  const auto d = negatives.size(2);
  if (draws.checked)
    check_draw_shapes(draws, b);  // the indices were checked on the host
  else
    check_pairwise_draws(draws, b, m);
  const auto k = draws.first.size(1);
  auto first = draws.first.to(negatives.device());
  auto second = draws.second.to(negatives.device());
  auto gather = [&](const torch::Tensor& idx) {
    return negatives.gather(1, idx.unsqueeze(-1).expand({b, k, d}));
  };
  auto lam = draws.lambda.to(negatives.device(), negatives.scalar_type()).unsqueeze(-1);
  return unit_rows_last(lam * gather(first) + (1 - lam) * gather(second));
}

torch::Tensor mix_listwise(const torch::Tensor& queries, const torch::Tensor& negatives, double mix_temperature) {
  if (!queries.defined() || !negatives.defined() || queries.dim() != 2 || negatives.dim() != 3 ||
      negatives.size(0) != queries.size(0) || negatives.size(2) != queries.size(1))
    throw UsageError("list-wise mixing: need queries [B, d] and negatives [B, M, d] (got " +
                     (queries.defined() ? sizes_of(queries) : std::string("undefined")) + " and " +
                     (negatives.defined() ? sizes_of(negatives) : std::string("undefined")) + ")");
  if (negatives.size(1) < 1) throw UsageError("list-wise mixing needs at least 1 hard negative per query");
  if (!(std::isfinite(mix_temperature) && mix_temperature > 0)) {
    std::ostringstream os;
    os << "list-wise mixing: temperature must be finite and > 0 (got " << mix_temperature << ")";
    throw UsageError(os.str());
  }
  auto sims = torch::bmm(negatives, queries.unsqueeze(2)).squeeze(2);  // [B, M]
  auto weights = torch::softmax(sims / mix_temperature, 1);
  auto mixed = torch::bmm(weights.unsqueeze(1), negatives);  // [B, 1, d]
  return unit_rows_last(mixed);
}

}  // namespace kalm::loss
