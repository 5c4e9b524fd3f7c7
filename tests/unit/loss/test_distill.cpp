// Contrastive distillation: KL(P_teacher ‖ P_student), batchmean, + α·KL on top of the contrastive loss.
#include <doctest/doctest.h>

#include <cmath>

#include "kalm/error.h"
#include "kalm/loss/loss.h"
#include "reference.h"

using kalm::loss::BatchInfo;
using kalm::loss::compute_loss;
using kalm::loss::DistillScope;
using kalm_test::plain_options;

namespace {

BatchInfo with_teacher(std::int64_t g, torch::Tensor teacher, torch::Tensor in_batch = {}) {
  BatchInfo bi;
  bi.group_size = g;
  bi.teacher_scores = std::move(teacher);
  bi.in_batch = std::move(in_batch);
  return bi;
}

}  // namespace

DOCTEST_TEST_CASE("KL, hand-computed: one query, group of 2") {
  // q = (1, 0); p+ = (1, 0), p- = (0.6, 0.8): student cosines [1, 0.6]; teacher scores [2, 0]; τ_t = τ_s = 1.
  //   P_t = (e², 1)/(e² + 1) ≈ (0.880797, 0.119203)
  //   P_s = (e, e^0.6)/(e + e^0.6) ≈ (0.598688, 0.401312)
  //   KL = Σ P_t log(P_t / P_s) ≈ 0.880797·log(1.471247) + 0.119203·log(0.297034) ≈ 0.195332
  auto q = torch::tensor({{1.0, 0.0}}, torch::kDouble);
  auto p = torch::tensor({{1.0, 0.0}, {0.6, 0.8}}, torch::kDouble);
  auto teacher = torch::tensor({{2.0, 0.0}}, torch::kDouble);
  auto o = plain_options(1.0);
  o.teacher_temperature = 1.0;
  o.student_temperature = 1.0;
  const double e2 = std::exp(2.0), pt0 = e2 / (e2 + 1), pt1 = 1 / (e2 + 1);
  const double s0 = std::exp(1.0), s1 = std::exp(0.6), ps0 = s0 / (s0 + s1), ps1 = s1 / (s0 + s1);
  const double kl = pt0 * std::log(pt0 / ps0) + pt1 * std::log(pt1 / ps1);
  const double infonce = std::log1p(std::exp(-0.4));

  auto out = compute_loss(q, p, with_teacher(2, teacher), o);
  DOCTEST_CHECK(out.components.at("kl").item<double>() == doctest::Approx(kl).epsilon(1e-13));
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(infonce + kl).epsilon(1e-13));

  o.distill_weight = 0.25;
  out = compute_loss(q, p, with_teacher(2, teacher), o);
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(infonce + 0.25 * kl).epsilon(1e-13));

  o.distill_only = true;  // only α·KL; the contrastive terms are still reported
  out = compute_loss(q, p, with_teacher(2, teacher), o);
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(0.25 * kl).epsilon(1e-13));
  DOCTEST_CHECK(out.components.at("infonce").item<double>() == doctest::Approx(infonce).epsilon(1e-13));

  // Same number as torch's KLDivLoss(reduction = 'batchmean') on the student's log-probabilities.
  namespace F = torch::nn::functional;
  auto torch_kl = F::kl_div(torch::log(torch::tensor({{ps0, ps1}}, torch::kDouble)),
                            torch::tensor({{pt0, pt1}}, torch::kDouble),
                            F::KLDivFuncOptions().reduction(torch::kBatchMean));
  DOCTEST_CHECK(torch_kl.item<double>() == doctest::Approx(kl).epsilon(1e-13));
}

DOCTEST_TEST_CASE("KL against the reference: group and full in-batch row, temperatures, masked rows") {
  torch::manual_seed(51);
  const std::int64_t b = 3, g = 3, d = 5;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  auto teacher = torch::randn({b, g}, torch::kDouble);
  auto mask = torch::tensor({1, 0, 1}, torch::kLong).to(torch::kBool);
  for (auto scope : {DistillScope::kGroup, DistillScope::kInBatch}) {
    for (bool masked : {false, true}) {
      DOCTEST_CAPTURE(static_cast<int>(scope));
      DOCTEST_CAPTURE(masked);
      auto o = plain_options(0.05);
      o.distill_scope = scope;
      o.teacher_temperature = 0.2;
      o.student_temperature = 0.05;
      o.distill_only = true;
      auto out = compute_loss(q, p, with_teacher(g, teacher, masked ? mask : torch::Tensor()), o);
      kalm_test::RefConfig rc;
      rc.b = b;
      rc.g = g;
      rc.dim = d;
      rc.tau = 0.05;
      rc.teacher = kalm_test::to_vec(teacher);
      rc.tau_t = 0.2;
      rc.tau_s = 0.05;
      rc.kl_full_row = scope == DistillScope::kInBatch;
      rc.distill_only = true;
      if (masked) rc.in_batch = {true, false, true};
      auto ref = kalm_test::reference_loss(kalm_test::to_vec(q), kalm_test::to_vec(p), rc);
      DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(ref.total).epsilon(1e-12));
      DOCTEST_CHECK(out.components.at("kl").item<double>() == doctest::Approx(ref.per_dim[0].kl).epsilon(1e-12));
    }
  }
  // The full-row KL is larger: the student spreads mass over columns the teacher gives none.
  auto o = plain_options(0.05);
  o.distill_only = true;
  auto group = compute_loss(q, p, with_teacher(g, teacher), o).total.item<double>();
  o.distill_scope = DistillScope::kInBatch;
  auto full = compute_loss(q, p, with_teacher(g, teacher), o).total.item<double>();
  DOCTEST_CHECK(full > group);
  // Rows without in-batch negatives: the full row is the group.
  auto none = torch::zeros({b}, torch::kBool);
  auto full_masked = compute_loss(q, p, with_teacher(g, teacher, none), o).total.item<double>();
  DOCTEST_CHECK(full_masked == doctest::Approx(group).epsilon(1e-13));
}

DOCTEST_TEST_CASE("KL equals 0 when the student reproduces the teacher's distribution") {
  torch::manual_seed(52);
  const std::int64_t b = 2, g = 4, d = 6;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  namespace F = torch::nn::functional;
  auto qn = F::normalize(q, F::NormalizeFuncOptions().dim(1));
  auto pn = F::normalize(p, F::NormalizeFuncOptions().dim(1));
  // Teacher = the student's own group cosines scaled by τ_t/τ_s gives identical distributions.
  auto cos = (qn.unsqueeze(1) * pn.view({b, g, d})).sum(-1);
  auto o = plain_options(0.05);
  o.distill_only = true;
  o.teacher_temperature = 0.1;
  o.student_temperature = 0.02;
  auto out = compute_loss(q, p, with_teacher(g, cos * (0.1 / 0.02)), o);
  DOCTEST_CHECK(std::abs(out.total.item<double>()) < 1e-12);
}

DOCTEST_TEST_CASE("KL gradients match finite differences (group and full row)") {
  torch::manual_seed(53);
  const std::int64_t b = 3, g = 2, d = 4;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  auto teacher = torch::randn({b, g}, torch::kDouble);
  for (auto scope : {DistillScope::kGroup, DistillScope::kInBatch}) {
    for (bool only : {true, false}) {
      DOCTEST_CAPTURE(static_cast<int>(scope));
      DOCTEST_CAPTURE(only);
      auto o = plain_options(0.1);
      o.focal_gamma = 0.5;
      o.distill_scope = scope;
      o.distill_only = only;
      o.teacher_temperature = 0.1;
      o.student_temperature = 0.1;
      auto bi = with_teacher(g, teacher);
      auto ev = kalm_test::evaluate(q, p, bi, o);
      auto [fq, fp] = kalm_test::library_fd(q, p, bi, o);
      DOCTEST_CHECK(kalm_test::relative_gap(fq, ev.grad_q) < 1e-6);
      DOCTEST_CHECK(kalm_test::relative_gap(fp, ev.grad_p) < 1e-6);
    }
  }
  // The teacher never gets a gradient.
  auto t = teacher.clone().requires_grad_(true);
  auto o = plain_options(0.1);
  auto out = compute_loss(q.clone().requires_grad_(true), p, with_teacher(g, t), o);
  out.total.backward();
  DOCTEST_CHECK(!t.grad().defined());
}
