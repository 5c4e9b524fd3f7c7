// Focal-style reweighting: w_i = (1 − p_i)^γ, loss = mean_i w_i · (−log p_i).
#include <doctest/doctest.h>

#include <cmath>

#include "kalm/loss/loss.h"
#include "reference.h"

using kalm::loss::BatchInfo;
using kalm::loss::compute_loss;
using kalm_test::plain_options;

namespace {

BatchInfo group_of(std::int64_t g, bool in_batch, std::int64_t b) {
  BatchInfo bi;
  bi.group_size = g;
  if (!in_batch) bi.in_batch = torch::zeros({b}, torch::kBool);
  return bi;
}

kalm_test::RefConfig ref_config(std::int64_t b, std::int64_t g, std::int64_t d, double tau, double gamma) {
  kalm_test::RefConfig rc;
  rc.b = b;
  rc.g = g;
  rc.dim = d;
  rc.tau = tau;
  rc.gamma = gamma;
  return rc;
}

}  // namespace

DOCTEST_TEST_CASE("focal, hand-computed on the in-group hand case") {
  // Same vectors as test_infonce's hand case, in-group only, τ = 1, γ = 0.5:
  //   row 1: nll1 = log(1 + e^−0.4)  ≈ 0.513015, p1 = 1/(1 + e^−0.4)  ≈ 0.598688, w1 = (1 − p1)^0.5 ≈ 0.633492
  //   row 2: nll2 = log(1 + e^−0.04) ≈ 0.673347, p2 = 1/(1 + e^−0.04) ≈ 0.509999, w2 = (1 − p2)^0.5 ≈ 0.700001
  //   focal = (w1·nll1 + w2·nll2)/2 ≈ 0.398167 (not divided by Σw)
  auto q = torch::tensor({1.0, 0.0, 0.0, 1.0}, torch::kDouble).view({2, 2});
  auto p = torch::tensor({1.0, 0.0, 0.6, 0.8, 0.0, 1.0, 0.28, 0.96}, torch::kDouble).view({4, 2});
  auto o = plain_options(1.0);
  o.focal_gamma = 0.5;
  auto out = compute_loss(q, p, group_of(2, false, 2), o);
  const double nll1 = std::log1p(std::exp(-0.4)), nll2 = std::log1p(std::exp(-0.04));
  const double w1 = std::sqrt(1 - 1 / (1 + std::exp(-0.4))), w2 = std::sqrt(1 - 1 / (1 + std::exp(-0.04)));
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx((w1 * nll1 + w2 * nll2) / 2).epsilon(1e-13));
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(0.39816740397565087).epsilon(1e-12));
  DOCTEST_CHECK(out.components.at("focal").item<double>() == doctest::Approx(0.39816740397565087).epsilon(1e-12));
  DOCTEST_CHECK(out.components.at("infonce").item<double>() == doctest::Approx((nll1 + nll2) / 2).epsilon(1e-13));
  DOCTEST_CHECK(out.metrics.at("focal_weight").item<double>() == doctest::Approx((w1 + w2) / 2).epsilon(1e-13));
}

DOCTEST_TEST_CASE("focal against the loop reference, several γ, in-batch and in-group") {
  torch::manual_seed(21);
  const std::int64_t b = 4, g = 3, d = 5;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  for (double gamma : {0.0, 0.5, 1.0, 2.0}) {
    for (bool in_batch : {true, false}) {
      auto o = plain_options(0.05);
      o.focal_gamma = gamma;
      auto out = compute_loss(q, p, group_of(g, in_batch, b), o);
      auto rc = ref_config(b, g, d, 0.05, gamma);
      if (!in_batch) rc.in_batch.assign(b, false);
      auto ref = kalm_test::reference_loss(kalm_test::to_vec(q), kalm_test::to_vec(p), rc);
      DOCTEST_CAPTURE(gamma);
      DOCTEST_CAPTURE(in_batch);
      DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(ref.total).epsilon(1e-12));
      DOCTEST_CHECK(out.components.at("infonce").item<double>() ==
                    doctest::Approx(ref.per_dim[0].infonce).epsilon(1e-12));
      DOCTEST_CHECK(out.metrics.at("focal_weight").item<double>() ==
                    doctest::Approx(ref.per_dim[0].focal_weight).epsilon(1e-12));
    }
  }
}

DOCTEST_TEST_CASE("γ = 0 is plain InfoNCE exactly") {
  torch::manual_seed(22);
  auto q = torch::randn({3, 4}, torch::kDouble);
  auto p = torch::randn({9, 4}, torch::kDouble);
  auto o = plain_options(0.05);
  o.focal_gamma = 0.0;
  o.focal_detach = true;  // irrelevant at γ = 0
  auto a = kalm_test::evaluate(q, p, group_of(3, true, 3), o);
  auto out = compute_loss(q, p, group_of(3, true, 3), o);
  DOCTEST_CHECK(torch::equal(out.components.at("focal"), out.components.at("infonce")));
  DOCTEST_CHECK(out.metrics.at("focal_weight").item<double>() == 1.0);
  o.focal_detach = false;
  auto c = kalm_test::evaluate(q, p, group_of(3, true, 3), o);
  DOCTEST_CHECK(a.total == c.total);
  DOCTEST_CHECK(torch::equal(a.grad_q, c.grad_q));
  DOCTEST_CHECK(torch::equal(a.grad_p, c.grad_p));
}

DOCTEST_TEST_CASE("focal gradients: flowing through w, and detached w, against finite differences") {
  torch::manual_seed(23);
  const std::int64_t b = 3, g = 3, d = 4;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  auto o = plain_options(0.1);
  o.focal_gamma = 0.5;
  for (bool in_batch : {true, false}) {
    DOCTEST_CAPTURE(in_batch);
    auto bi = group_of(g, in_batch, b);
    o.focal_detach = false;
    auto flowing = kalm_test::evaluate(q, p, bi, o);
    auto [fq, fp] = kalm_test::library_fd(q, p, bi, o);
    DOCTEST_CHECK(kalm_test::relative_gap(fq, flowing.grad_q) < 1e-6);
    DOCTEST_CHECK(kalm_test::relative_gap(fp, flowing.grad_p) < 1e-6);

    o.focal_detach = true;
    auto detached = kalm_test::evaluate(q, p, bi, o);
    // Same value, different gradient.
    DOCTEST_CHECK(detached.total == flowing.total);
    DOCTEST_CHECK((detached.grad_q - flowing.grad_q).abs().max().item<double>() > 1e-4);
    // The detached gradient is the finite difference of the reference with w frozen at its value here.
    auto rc = ref_config(b, g, d, 0.1, 0.5);
    if (!in_batch) rc.in_batch.assign(b, false);
    auto base = kalm_test::reference_loss(kalm_test::to_vec(q), kalm_test::to_vec(p), rc);
    DOCTEST_CHECK(detached.total == doctest::Approx(base.total).epsilon(1e-12));
    kalm_test::Vec frozen = base.per_dim[0].w;
    rc.frozen_w = &frozen;
    auto [rq, rp] = kalm_test::finite_difference(
        [&](const torch::Tensor& a, const torch::Tensor& c) {
          return kalm_test::reference_loss(kalm_test::to_vec(a), kalm_test::to_vec(c), rc).total;
        },
        q, p);
    DOCTEST_CHECK(kalm_test::relative_gap(rq, detached.grad_q) < 1e-6);
    DOCTEST_CHECK(kalm_test::relative_gap(rp, detached.grad_p) < 1e-6);
  }
}

DOCTEST_TEST_CASE("focal stays finite when p rounds to 1") {
  // τ = 0.001 and a positive equal to the query: p_pos = 1 − O(e^−1000), which is
  // exactly 1 in double; (1 − p)^γ' would be infinite in a naive gradient.
  auto q = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}});
  auto p = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {0.0f, 1.0f}, {1.0f, 0.0f}});
  auto o = plain_options(0.001);
  o.focal_gamma = 0.5;
  auto ev = kalm_test::evaluate(q, p, group_of(2, false, 2), o);
  DOCTEST_CHECK(ev.total == doctest::Approx(0.0).epsilon(1e-30));
  DOCTEST_CHECK(torch::isfinite(ev.grad_q).all().item<bool>());
  DOCTEST_CHECK(torch::isfinite(ev.grad_p).all().item<bool>());
}
