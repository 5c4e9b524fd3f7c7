#include "kalm/model/pooling.h"

#include <string>

#include "kalm/error.h"

namespace kalm::model {

std::string_view pooling_name(Pooling pooling) {
  switch (pooling) {
    case Pooling::Mean: return "mean";
    case Pooling::LastToken: return "last";
    case Pooling::Cls: return "cls";
  }
  return "?";
}

Pooling parse_pooling(std::string_view name) {
  if (name == "mean") return Pooling::Mean;
  if (name == "last" || name == "lasttoken") return Pooling::LastToken;
  if (name == "cls") return Pooling::Cls;
  throw UsageError("unknown pooling \"" + std::string(name) + "\" (choose mean, last or cls)");
}

namespace {

std::string shape_str(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

torch::Tensor pool(const torch::Tensor& hidden, const torch::Tensor& mask, Pooling pooling, EmptyRows empty_rows) {
  if (hidden.dim() != 3 || mask.dim() != 2 || mask.size(0) != hidden.size(0) ||
      mask.size(1) != hidden.size(1))
    throw UsageError("pool: hidden states " + shape_str(hidden) + " and mask " + shape_str(mask) +
                     " do not match ([B, L, H] and [B, L])");
  const torch::Tensor valid = mask.to(hidden.device()).ne(0);
  const torch::Tensor counts = valid.sum(1);
  if (empty_rows == EmptyRows::kCheckOnDevice) {
    const torch::Tensor empty = counts.eq(0);
    if (empty.any().item<bool>()) {
      const int64_t row = empty.nonzero().index({0, 0}).item<int64_t>();
      throw UsageError("pool: sequence " + std::to_string(row) + " of the batch has no tokens");
    }
  }
  const torch::Tensor h = hidden.to(torch::kFloat);
  switch (pooling) {
    case Pooling::Mean: {
      const torch::Tensor m = valid.to(torch::kFloat).unsqueeze(-1);
      return (h * m).sum(1) / counts.to(torch::kFloat).unsqueeze(-1);
    }
    case Pooling::LastToken: {
      // The highest index holding a token: right or left padding alike.
      const torch::Tensor pos = torch::arange(valid.size(1), valid.options().dtype(torch::kLong));
      const torch::Tensor last = (valid.to(torch::kLong) * (pos + 1)).argmax(1);
      return h.index({torch::arange(h.size(0), last.options()), last});
    }
    case Pooling::Cls:
      return h.select(1, 0).clone();
  }
  throw InternalError("pool: unknown pooling");
}

torch::Tensor l2_normalize(const torch::Tensor& x) {
  const torch::Tensor xf = x.to(torch::kFloat);
  return xf / xf.norm(2, {-1}, /*keepdim=*/true).clamp_min(1e-12);
}

torch::Tensor matryoshka(const torch::Tensor& x, std::int64_t dim) {
  if (x.dim() != 2) throw UsageError("matryoshka: expected [N, D] embeddings, got " + shape_str(x));
  if (dim <= 0 || dim > x.size(1))
    throw UsageError("matryoshka: dimension " + std::to_string(dim) + " is outside 1.." +
                     std::to_string(x.size(1)));
  return l2_normalize(x.narrow(1, 0, dim));
}

}  // namespace kalm::model
