#pragma once
// An independent double-precision reference for kalm::loss::compute_loss,
// written as explicit loops straight from the formulas in recipe §3 (no
// logsumexp trick for 1 − p, no masks, no torch ops), plus finite-difference
// gradients. The tests compare the library against it.

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "kalm/loss/loss.h"

namespace kalm_test {

using Vec = std::vector<double>;

inline Vec to_vec(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kDouble).contiguous();
  return Vec(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

inline torch::Generator seeded(std::uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

struct RefConfig {
  std::int64_t b = 1, g = 1, dim = 1;
  double tau = 0.05;
  double gamma = 0.0;
  std::vector<bool> in_batch;  // empty: every row uses in-batch negatives
  enum class Mix { kNone, kPair, kList } mix = Mix::kNone;
  std::int64_t k = 1;                    // synthetic negatives per row (pair-wise)
  std::vector<std::int64_t> first, second;  // [B·K]
  Vec lambda;                            // [B·K]
  double tau_mix = 0.05;
  std::vector<std::int64_t> dims;  // empty: {dim}
  Vec weights;
  // distillation
  Vec teacher;  // [B·G]; empty: none
  double tau_t = 0.05, tau_s = 0.05, alpha = 1.0;
  bool kl_full_row = false;
  bool distill_only = false;
  // Frozen quantities (single-dim configs): stand in for detached tensors so a
  // finite difference of the reference gives the detached gradient.
  const Vec* frozen_w = nullptr;               // [B]
  const std::vector<Vec>* frozen_h = nullptr;  // [B·K] vectors of size dim
};

struct RefDim {
  double infonce = 0, focal = 0, kl = 0, loss = 0, p_pos = 0, accuracy = 0, focal_weight = 0;
  Vec w;                  // [B]
  std::vector<Vec> h;     // [B·K]
};

struct RefResult {
  double total = 0;
  std::vector<RefDim> per_dim;
};

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline Vec unit(Vec v) {
  double n = std::sqrt(dot(v, v));
  for (auto& x : v) x /= std::max(n, 1e-12);
  return v;
}

inline double log_sum_exp(const Vec& xs) {
  double m = -INFINITY;
  for (double x : xs) m = std::max(m, x);
  double s = 0;
  for (double x : xs) s += std::exp(x - m);
  return m + std::log(s);
}

// q: [B·dim] row-major, p: [B·G·dim] row-major.
inline RefResult reference_loss(const Vec& q, const Vec& p, const RefConfig& c) {
  const std::int64_t n = c.b * c.g, m = c.g - 1;
  std::vector<std::int64_t> dims = c.dims.empty() ? std::vector<std::int64_t>{c.dim} : c.dims;
  Vec weights = c.weights.empty() ? Vec{1.0} : c.weights;
  RefResult res;
  for (std::size_t di = 0; di < dims.size(); ++di) {
    const std::int64_t d = dims[di];
    std::vector<Vec> qn(c.b), pn(n);
    for (std::int64_t i = 0; i < c.b; ++i) qn[i] = unit(Vec(q.begin() + i * c.dim, q.begin() + i * c.dim + d));
    for (std::int64_t j = 0; j < n; ++j) pn[j] = unit(Vec(p.begin() + j * c.dim, p.begin() + j * c.dim + d));
    RefDim rd;
    const bool mixing = c.mix != RefConfig::Mix::kNone && m >= 2;
    for (std::int64_t i = 0; i < c.b; ++i) {
      const bool in_batch = c.in_batch.empty() || c.in_batch[i];
      const double pos = dot(qn[i], pn[i * c.g]) / c.tau;
      Vec logits;  // every candidate of the row, positive included
      double best_neg = -INFINITY;
      for (std::int64_t col = 0; col < n; ++col) {
        if (!in_batch && col / c.g != i) continue;
        double s = dot(qn[i], pn[col]) / c.tau;
        logits.push_back(s);
        if (col != i * c.g) best_neg = std::max(best_neg, s);
      }
      if (mixing) {
        const std::int64_t kk = c.mix == RefConfig::Mix::kPair ? c.k : 1;
        for (std::int64_t r = 0; r < kk; ++r) {
          Vec h(d, 0.0);
          if (c.mix == RefConfig::Mix::kPair) {
            const double lam = c.lambda[i * kk + r];
            const Vec& a = pn[i * c.g + 1 + c.first[i * kk + r]];
            const Vec& bb = pn[i * c.g + 1 + c.second[i * kk + r]];
            for (std::int64_t t = 0; t < d; ++t) h[t] = lam * a[t] + (1 - lam) * bb[t];
          } else {
            Vec s(m);
            for (std::int64_t mm = 0; mm < m; ++mm) s[mm] = dot(qn[i], pn[i * c.g + 1 + mm]) / c.tau_mix;
            const double z = log_sum_exp(s);
            for (std::int64_t mm = 0; mm < m; ++mm)
              for (std::int64_t t = 0; t < d; ++t) h[t] += std::exp(s[mm] - z) * pn[i * c.g + 1 + mm][t];
          }
          h = unit(h);
          if (c.frozen_h) h = (*c.frozen_h)[i * kk + r];
          rd.h.push_back(h);
          logits.push_back(dot(qn[i], h) / c.tau);
        }
      }
      const double nll = log_sum_exp(logits) - pos;
      const double prob = std::exp(-nll);
      double w = c.gamma > 0 ? std::pow(1.0 - prob, c.gamma) : 1.0;
      if (c.frozen_w) w = (*c.frozen_w)[i];
      rd.w.push_back(w);
      rd.infonce += nll / c.b;
      rd.focal += w * nll / c.b;
      rd.p_pos += prob / c.b;
      rd.focal_weight += w / c.b;
      rd.accuracy += (pos > best_neg ? 1.0 : 0.0) / c.b;
      if (!c.teacher.empty()) {
        Vec t(c.g), s_all;
        for (std::int64_t gg = 0; gg < c.g; ++gg) t[gg] = c.teacher[i * c.g + gg] / c.tau_t;
        const double zt = log_sum_exp(t);
        Vec s_group(c.g);
        for (std::int64_t gg = 0; gg < c.g; ++gg) s_group[gg] = dot(qn[i], pn[i * c.g + gg]) / c.tau_s;
        double zs;
        if (c.kl_full_row) {
          for (std::int64_t col = 0; col < n; ++col)
            if (in_batch || col / c.g == i) s_all.push_back(dot(qn[i], pn[col]) / c.tau_s);
          zs = log_sum_exp(s_all);
        } else {
          zs = log_sum_exp(s_group);
        }
        double kl = 0;
        for (std::int64_t gg = 0; gg < c.g; ++gg) {
          const double log_pt = t[gg] - zt, log_ps = s_group[gg] - zs;
          kl += std::exp(log_pt) * (log_pt - log_ps);
        }
        rd.kl += kl / c.b;
      }
    }
    rd.loss = (c.distill_only ? 0.0 : rd.focal) + (c.teacher.empty() ? 0.0 : c.alpha * rd.kl);
    res.total += weights[di] * rd.loss;
    res.per_dim.push_back(rd);
  }
  return res;
}

// Central differences of f over every element of q and p (double tensors).
inline std::pair<torch::Tensor, torch::Tensor> finite_difference(
    const std::function<double(const torch::Tensor&, const torch::Tensor&)>& f, const torch::Tensor& q,
    const torch::Tensor& p, double step = 1e-6) {
  auto gq = torch::zeros_like(q);
  auto gp = torch::zeros_like(p);
  for (auto [x, g] : {std::pair<const torch::Tensor*, torch::Tensor*>{&q, &gq}, {&p, &gp}}) {
    auto flat = x->view(-1);
    auto gflat = g->view(-1);
    for (std::int64_t e = 0; e < flat.numel(); ++e) {
      const double orig = flat[e].item<double>();
      auto xp = x->clone();
      xp.view(-1)[e] = orig + step;
      auto xm = x->clone();
      xm.view(-1)[e] = orig - step;
      const double fp = x == &q ? f(xp, p) : f(q, xp);
      const double fm = x == &q ? f(xm, p) : f(q, xm);
      gflat[e] = (fp - fm) / (2 * step);
    }
  }
  return {gq, gp};
}

// max |a − b| relative to the gradient's scale.
inline double relative_gap(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-12);
  return (a - b).abs().max().item<double>() / scale;
}

// Options for the plain pieces: no focal, no mixing, full dim only.
inline kalm::loss::LossOptions plain_options(double tau) {
  kalm::loss::LossOptions o;
  o.temperature = tau;
  o.focal_gamma = 0.0;
  o.mix = kalm::loss::MixMode::kNone;
  o.matryoshka_dims.clear();
  o.matryoshka_weights.clear();
  return o;
}

// compute_loss's value and autograd gradients (a fresh generator from `seed`).
struct Evaluated {
  double total = 0;
  torch::Tensor grad_q, grad_p;
};
inline Evaluated evaluate(const torch::Tensor& q, const torch::Tensor& p, const kalm::loss::BatchInfo& batch,
                          const kalm::loss::LossOptions& o, std::uint64_t seed = 7) {
  auto qq = q.detach().clone().requires_grad_(true);
  auto pp = p.detach().clone().requires_grad_(true);
  auto out = kalm::loss::compute_loss(qq, pp, batch, o, seeded(seed));
  out.total.backward();
  return {out.total.item<double>(), qq.grad(), pp.grad()};
}

// Finite differences of compute_loss itself (same generator seed every call,
// so the mixing draws are the same at every point).
inline std::pair<torch::Tensor, torch::Tensor> library_fd(const torch::Tensor& q, const torch::Tensor& p,
                                                          const kalm::loss::BatchInfo& batch,
                                                          const kalm::loss::LossOptions& o, std::uint64_t seed = 7) {
  return finite_difference(
      [&](const torch::Tensor& a, const torch::Tensor& b) {
        torch::NoGradGuard no_grad;
        return kalm::loss::compute_loss(a, b, batch, o, seeded(seed)).total.item<double>();
      },
      q, p);
}

}  // namespace kalm_test
