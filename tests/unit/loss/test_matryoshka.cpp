// Matryoshka: Σ_d c_d · loss(normalize(q[:, :d]), normalize(p[:, :d])), not divided by Σ c_d.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "kalm/error.h"
#include "kalm/loss/loss.h"
#include "kalm/loss/mixing.h"
#include "reference.h"

using kalm::loss::BatchInfo;
using kalm::loss::compute_loss;
using kalm::loss::MixMode;
using kalm_test::plain_options;
using kalm_test::seeded;

namespace {

BatchInfo group_of(std::int64_t g) {
  BatchInfo bi;
  bi.group_size = g;
  return bi;
}

std::vector<std::int64_t> longs(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<std::int64_t>(c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel());
}

}  // namespace

DOCTEST_TEST_CASE("Matryoshka is the weighted sum of the loss on truncated, renormalised prefixes") {
  // Hand case: D = 2, dims {2, 1}, weights {1, 0.5}, τ = 1, B = 2, G = 1 (in-batch only).
  //   q = [(2, 1), (1, 3)], p = [(1, 1), (−1, 2)].
  // d = 1: every prefix is ±1 after normalising: q -> (1), (1); p -> (1), (−1); both rows' cosines are [1, −1]:
  //   row 1 (positive p1, cosine 1):  log(e + e^−1) − 1    = log(1 + e^−2)
  //   row 2 (positive p2, cosine −1): log(e + e^−1) − (−1) = log(1 + e^2); loss@1 is their mean.
  // d = 2: the full-dim loss; checked against compute_loss on the plain inputs.
  auto q = torch::tensor({2.0, 1.0, 1.0, 3.0}, torch::kDouble).view({2, 2});
  auto p = torch::tensor({1.0, 1.0, -1.0, 2.0}, torch::kDouble).view({2, 2});
  auto o = plain_options(1.0);
  o.matryoshka_dims = {2, 1};
  o.matryoshka_weights = {1.0, 0.5};
  auto out = compute_loss(q, p, group_of(1), o);
  const double l1 = (std::log1p(std::exp(-2.0)) + std::log1p(std::exp(2.0))) / 2;
  const double full = compute_loss(q, p, group_of(1), plain_options(1.0)).total.item<double>();
  DOCTEST_CHECK(out.components.at("loss@1").item<double>() == doctest::Approx(l1).epsilon(1e-14));
  DOCTEST_CHECK(out.components.at("loss@2").item<double>() == doctest::Approx(full).epsilon(1e-14));
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(full + 0.5 * l1).epsilon(1e-14));
  DOCTEST_CHECK(out.components.at("infonce").item<double>() == doctest::Approx(full + 0.5 * l1).epsilon(1e-14));
  // Unsuffixed metrics are the full dim's.
  DOCTEST_CHECK(torch::equal(out.metrics.at("p_pos"), out.metrics.at("p_pos@2")));
  // inputs_normalized skips only the full-dim normalisation; prefixes are still renormalised.
  auto qn = q / q.norm(2, 1, true);
  auto pn = p / p.norm(2, 1, true);
  o.inputs_normalized = true;
  auto out2 = compute_loss(qn, pn, group_of(1), o);
  DOCTEST_CHECK(out2.total.item<double>() == doctest::Approx(full + 0.5 * l1).epsilon(1e-13));
}

DOCTEST_TEST_CASE("Matryoshka with focal, shared pair-wise mixing and distillation, against the reference") {
  torch::manual_seed(41);
  const std::int64_t b = 3, g = 4, d = 6;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  auto teacher = torch::randn({b, g}, torch::kDouble);
  kalm::loss::LossOptions o;
  o.temperature = 0.05;
  o.focal_gamma = 0.5;
  o.mix = MixMode::kPairwise;
  o.matryoshka_dims = {6, 4, 2};
  o.matryoshka_weights = {1.0, 0.3, 0.2};
  o.teacher_temperature = 0.1;
  o.student_temperature = 0.05;
  o.distill_weight = 0.7;
  BatchInfo bi = group_of(g);
  bi.teacher_scores = teacher;
  auto out = compute_loss(q, p, bi, o, seeded(3));

  kalm_test::RefConfig rc;
  rc.b = b;
  rc.g = g;
  rc.dim = d;
  rc.tau = 0.05;
  rc.gamma = 0.5;
  rc.mix = kalm_test::RefConfig::Mix::kPair;
  auto dr = kalm::loss::draw_pairwise_mixing(b, g - 1, 1, 2.0, 2.0, seeded(3));
  rc.first = longs(dr.first);
  rc.second = longs(dr.second);
  rc.lambda = kalm_test::to_vec(dr.lambda);  // one draw, every dim
  rc.dims = {6, 4, 2};
  rc.weights = {1.0, 0.3, 0.2};
  rc.teacher = kalm_test::to_vec(teacher);
  rc.tau_t = 0.1;
  rc.tau_s = 0.05;
  rc.alpha = 0.7;
  auto ref = kalm_test::reference_loss(kalm_test::to_vec(q), kalm_test::to_vec(p), rc);
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(ref.total).epsilon(1e-12));
  const std::int64_t dims[] = {6, 4, 2};
  const double weights[] = {1.0, 0.3, 0.2};
  double focal = 0, kl = 0, infonce = 0;
  for (int i = 0; i < 3; ++i) {
    const std::string at = "@" + std::to_string(dims[i]);
    DOCTEST_CHECK(out.components.at("focal" + at).item<double>() == doctest::Approx(ref.per_dim[i].focal).epsilon(1e-12));
    DOCTEST_CHECK(out.components.at("kl" + at).item<double>() == doctest::Approx(ref.per_dim[i].kl).epsilon(1e-12));
    DOCTEST_CHECK(out.components.at("loss" + at).item<double>() == doctest::Approx(ref.per_dim[i].loss).epsilon(1e-12));
    focal += weights[i] * ref.per_dim[i].focal;
    kl += weights[i] * ref.per_dim[i].kl;
    infonce += weights[i] * ref.per_dim[i].infonce;
  }
  DOCTEST_CHECK(out.components.at("focal").item<double>() == doctest::Approx(focal).epsilon(1e-12));
  DOCTEST_CHECK(out.components.at("kl").item<double>() == doctest::Approx(kl).epsilon(1e-12));
  DOCTEST_CHECK(out.components.at("infonce").item<double>() == doctest::Approx(infonce).epsilon(1e-12));
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(focal + 0.7 * kl).epsilon(1e-12));
}

DOCTEST_TEST_CASE("Matryoshka gradients (focal + mixing flowing + KL) match finite differences") {
  torch::manual_seed(42);
  const std::int64_t b = 2, g = 3, d = 4;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  kalm::loss::LossOptions o;
  o.temperature = 0.1;
  o.focal_gamma = 0.5;
  o.mix_detach = false;
  o.matryoshka_dims = {4, 2};
  o.matryoshka_weights = {1.0, 0.3};
  o.teacher_temperature = 0.1;
  o.student_temperature = 0.1;
  BatchInfo bi = group_of(g);
  bi.teacher_scores = torch::randn({b, g}, torch::kDouble);
  auto ev = kalm_test::evaluate(q, p, bi, o, 4);
  auto [fq, fp] = kalm_test::library_fd(q, p, bi, o, 4);
  DOCTEST_CHECK(kalm_test::relative_gap(fq, ev.grad_q) < 1e-6);
  DOCTEST_CHECK(kalm_test::relative_gap(fp, ev.grad_p) < 1e-6);
}

DOCTEST_TEST_CASE("recipe defaults on an 896-dim model: dims 896..64, weights summing to 1.7") {
  torch::manual_seed(43);
  const std::int64_t b = 2, g = 3, d = 896;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  kalm::loss::LossOptions o;  // τ 0.01, γ 0.5, pair-wise mixing, MRL 896/512/256/128/64
  auto out = compute_loss(q, p, group_of(g), o, seeded(1));
  double sum = 0;
  const std::int64_t dims[] = {896, 512, 256, 128, 64};
  const double weights[] = {1.0, 0.3, 0.2, 0.1, 0.1};
  for (int i = 0; i < 5; ++i) sum += weights[i] * out.components.at("loss@" + std::to_string(dims[i])).item<double>();
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(sum).epsilon(1e-12));

  kalm_test::RefConfig rc;
  rc.b = b;
  rc.g = g;
  rc.dim = d;
  rc.tau = 0.01;
  rc.gamma = 0.5;
  rc.mix = kalm_test::RefConfig::Mix::kPair;
  auto dr = kalm::loss::draw_pairwise_mixing(b, g - 1, 1, 2.0, 2.0, seeded(1));
  rc.first = longs(dr.first);
  rc.second = longs(dr.second);
  rc.lambda = kalm_test::to_vec(dr.lambda);
  rc.dims = {896, 512, 256, 128, 64};
  rc.weights = {1.0, 0.3, 0.2, 0.1, 0.1};
  auto ref = kalm_test::reference_loss(kalm_test::to_vec(q), kalm_test::to_vec(p), rc);
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(ref.total).epsilon(1e-11));

  // The same options on a 768-dim model must be set for that model, not silently truncated.
  auto q768 = torch::randn({b, 768}, torch::kDouble);
  auto p768 = torch::randn({b * g, 768}, torch::kDouble);
  DOCTEST_CHECK_THROWS_AS(compute_loss(q768, p768, group_of(g), o, seeded(1)), kalm::UsageError);
  kalm::loss::set_recipe_matryoshka(o, 768);
  DOCTEST_CHECK(o.matryoshka_dims == std::vector<std::int64_t>{768});
  DOCTEST_CHECK(o.matryoshka_weights == std::vector<double>{1.0});
  DOCTEST_CHECK(std::isfinite(compute_loss(q768, p768, group_of(g), o, seeded(1)).total.item<double>()));
}

DOCTEST_TEST_CASE("set_recipe_matryoshka") {
  kalm::loss::LossOptions o;
  kalm::loss::set_recipe_matryoshka(o, 3840);
  DOCTEST_CHECK(o.matryoshka_dims == std::vector<std::int64_t>{3840, 2048, 1024, 512, 256, 128, 64});
  DOCTEST_CHECK(o.matryoshka_weights == std::vector<double>{1.0, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1});
  kalm::loss::set_recipe_matryoshka(o, 896);
  DOCTEST_CHECK(o.matryoshka_dims == std::vector<std::int64_t>{896, 512, 256, 128, 64});
  DOCTEST_CHECK(o.matryoshka_weights == std::vector<double>{1.0, 0.3, 0.2, 0.1, 0.1});
  DOCTEST_CHECK_THROWS_AS(kalm::loss::set_recipe_matryoshka(o, 0), kalm::UsageError);
}
