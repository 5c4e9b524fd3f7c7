// Online hard-negative mixing: draws, the synthetic vectors, and their place in the loss.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <utility>

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

BatchInfo group_of(std::int64_t g, torch::Tensor in_batch = {}) {
  BatchInfo bi;
  bi.group_size = g;
  bi.in_batch = std::move(in_batch);
  return bi;
}

std::vector<std::int64_t> longs(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<std::int64_t>(c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel());
}

}  // namespace

DOCTEST_TEST_CASE("pair-wise draws: deterministic, j != k uniform, λ ~ Beta(2,2)") {
  auto a = kalm::loss::draw_pairwise_mixing(4, 7, 3, 2.0, 2.0, seeded(42));
  auto b = kalm::loss::draw_pairwise_mixing(4, 7, 3, 2.0, 2.0, seeded(42));
  DOCTEST_CHECK(torch::equal(a.first, b.first));
  DOCTEST_CHECK(torch::equal(a.second, b.second));
  DOCTEST_CHECK(torch::equal(a.lambda, b.lambda));
  DOCTEST_CHECK(a.first.sizes() == torch::IntArrayRef({4, 3}));
  DOCTEST_CHECK((a.lambda.scalar_type() == torch::kDouble));
  auto c = kalm::loss::draw_pairwise_mixing(4, 7, 3, 2.0, 2.0, seeded(43));
  DOCTEST_CHECK(!torch::equal(a.lambda, c.lambda));

  // Many draws with M = 3: the 6 ordered pairs (j, k), j != k, each about 1/6;
  // λ has Beta(2,2)'s mean 1/2 and variance ab/((a+b)²(a+b+1)) = 4/(16·5) = 0.05.
  const std::int64_t rows = 60000;
  auto big = kalm::loss::draw_pairwise_mixing(rows, 3, 1, 2.0, 2.0, seeded(1));
  auto first = longs(big.first), second = longs(big.second);
  std::map<std::pair<std::int64_t, std::int64_t>, double> freq;
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    if (first[i] == second[i] || first[i] < 0 || first[i] >= 3 || second[i] < 0 || second[i] >= 3) ++bad;
    freq[{first[i], second[i]}] += 1.0 / rows;
  }
  DOCTEST_CHECK(bad == 0);
  DOCTEST_CHECK(freq.size() == 6);
  for (const auto& kv : freq) DOCTEST_CHECK(kv.second == doctest::Approx(1.0 / 6).epsilon(0.05));
  DOCTEST_CHECK(big.lambda.min().item<double>() > 0.0);
  DOCTEST_CHECK(big.lambda.max().item<double>() < 1.0);
  DOCTEST_CHECK(big.lambda.mean().item<double>() == doctest::Approx(0.5).epsilon(0.01));
  DOCTEST_CHECK(big.lambda.var().item<double>() == doctest::Approx(0.05).epsilon(0.03));
  // Beta(5, 1) has mean 5/6: the parameters are used, in order.
  auto skewed = kalm::loss::draw_pairwise_mixing(20000, 2, 1, 5.0, 1.0, seeded(2));
  DOCTEST_CHECK(skewed.lambda.mean().item<double>() == doctest::Approx(5.0 / 6).epsilon(0.01));
}

DOCTEST_TEST_CASE("mix_pairwise and mix_listwise, hand-computed") {
  // Negatives of one query: n0 = (1, 0), n1 = (0, 1), n2 = (−1, 0).
  auto negs = torch::tensor({1.0, 0.0, 0.0, 1.0, -1.0, 0.0}, torch::kDouble).view({1, 3, 2});
  kalm::loss::PairwiseDraws d;
  d.first = torch::tensor({{0, 2}}, torch::kLong);
  d.second = torch::tensor({{1, 1}}, torch::kLong);
  d.lambda = torch::tensor({{0.75, 0.5}}, torch::kDouble);
  auto h = kalm::loss::mix_pairwise(negs, d);
  DOCTEST_REQUIRE(h.sizes() == torch::IntArrayRef({1, 2, 2}));
  // 0.75·(1,0) + 0.25·(0,1) = (0.75, 0.25), norm √0.625 -> (0.948683, 0.316228)
  DOCTEST_CHECK(h[0][0][0].item<double>() == doctest::Approx(0.75 / std::sqrt(0.625)).epsilon(1e-14));
  DOCTEST_CHECK(h[0][0][1].item<double>() == doctest::Approx(0.25 / std::sqrt(0.625)).epsilon(1e-14));
  // 0.5·(−1,0) + 0.5·(0,1) = (−0.5, 0.5) -> (−1/√2, 1/√2)
  DOCTEST_CHECK(h[0][1][0].item<double>() == doctest::Approx(-1 / std::sqrt(2.0)).epsilon(1e-14));
  DOCTEST_CHECK(h[0][1][1].item<double>() == doctest::Approx(1 / std::sqrt(2.0)).epsilon(1e-14));

  // List-wise, q = (1, 0), τ_mix = 1: similarities (1, 0, −1), λ = softmax = (e, 1, e^−1)/(e + 1 + e^−1);
  // Σ λ_m n_m ∝ (e − e^−1, 1), normalised.
  auto q = torch::tensor({{1.0, 0.0}}, torch::kDouble);
  auto hl = kalm::loss::mix_listwise(q, negs, 1.0);
  DOCTEST_REQUIRE(hl.sizes() == torch::IntArrayRef({1, 1, 2}));
  const double x = std::exp(1.0) - std::exp(-1.0), y = 1.0, n = std::sqrt(x * x + y * y);
  DOCTEST_CHECK(hl[0][0][0].item<double>() == doctest::Approx(x / n).epsilon(1e-14));
  DOCTEST_CHECK(hl[0][0][1].item<double>() == doctest::Approx(y / n).epsilon(1e-14));

  // Out-of-range draws are refused before they reach gather.
  d.first = torch::tensor({{0, 3}}, torch::kLong);
  DOCTEST_CHECK_THROWS_AS(kalm::loss::mix_pairwise(negs, d), kalm::UsageError);
}

DOCTEST_TEST_CASE("pair-wise mixing in the loss, hand-computed with the seeded draw") {
  // B = 1, G = 3 (M = 2), τ = 1, q = (1, 0); p+ = (1, 0), n1 = (0, 1), n2 = (0.6, 0.8).
  // One synthetic h = normalize(λ n_j + (1 − λ) n_k) joins the row:
  //   loss = log(e^1 + e^0 + e^0.6 + e^(h·q)) − 1.
  auto q = torch::tensor({{1.0, 0.0}}, torch::kDouble);
  auto p = torch::tensor({1.0, 0.0, 0.0, 1.0, 0.6, 0.8}, torch::kDouble).view({3, 2});
  auto o = plain_options(1.0);
  o.mix = MixMode::kPairwise;
  auto draws = kalm::loss::draw_pairwise_mixing(1, 2, 1, 2.0, 2.0, seeded(9));
  const double lam = draws.lambda[0][0].item<double>();
  const auto j = draws.first[0][0].item<std::int64_t>(), k = draws.second[0][0].item<std::int64_t>();
  DOCTEST_CHECK(j != k);
  const double n[2][2] = {{0.0, 1.0}, {0.6, 0.8}};
  double hx = lam * n[j][0] + (1 - lam) * n[k][0], hy = lam * n[j][1] + (1 - lam) * n[k][1];
  hx /= std::sqrt(hx * hx + hy * hy);
  const double expected = std::log(std::exp(1.0) + 1.0 + std::exp(0.6) + std::exp(hx)) - 1.0;
  auto out = compute_loss(q, p, group_of(3), o, seeded(9));
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(expected).epsilon(1e-13));
  DOCTEST_CHECK(out.metrics.at("synthetic_negatives").item<double>() == 1.0);
  // Accuracy counts real negatives only; p_pos includes the synthetic one.
  DOCTEST_CHECK(out.metrics.at("accuracy").item<double>() == 1.0);
  DOCTEST_CHECK(out.metrics.at("p_pos").item<double>() == doctest::Approx(std::exp(-expected)).epsilon(1e-13));
}

DOCTEST_TEST_CASE("mixing against the loop reference: pair-wise K = 2, list-wise; own row only") {
  torch::manual_seed(31);
  const std::int64_t b = 3, g = 4, d = 5, m = 3;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  auto mask = torch::tensor({1, 0, 1}, torch::kLong).to(torch::kBool);
  for (auto mode : {MixMode::kPairwise, MixMode::kListwise}) {
    for (bool in_batch_all : {true, false}) {
      DOCTEST_CAPTURE(static_cast<int>(mode));
      DOCTEST_CAPTURE(in_batch_all);
      auto o = plain_options(0.05);
      o.focal_gamma = 0.5;
      o.mix = mode;
      o.mix_count = mode == MixMode::kPairwise ? 2 : 1;
      o.mix_temperature = 0.2;
      kalm_test::RefConfig rc;
      rc.b = b;
      rc.g = g;
      rc.dim = d;
      rc.tau = 0.05;
      rc.gamma = 0.5;
      rc.tau_mix = 0.2;
      if (!in_batch_all) rc.in_batch = {true, false, true};
      if (mode == MixMode::kPairwise) {
        rc.mix = kalm_test::RefConfig::Mix::kPair;
        rc.k = 2;
        auto dr = kalm::loss::draw_pairwise_mixing(b, m, 2, 2.0, 2.0, seeded(5));
        rc.first = longs(dr.first);
        rc.second = longs(dr.second);
        rc.lambda = kalm_test::to_vec(dr.lambda);
      } else {
        rc.mix = kalm_test::RefConfig::Mix::kList;
      }
      auto ref = kalm_test::reference_loss(kalm_test::to_vec(q), kalm_test::to_vec(p), rc);
      auto out = compute_loss(q, p, group_of(g, in_batch_all ? torch::Tensor() : mask), o, seeded(5));
      DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(ref.total).epsilon(1e-12));
      DOCTEST_CHECK(out.metrics.at("p_pos").item<double>() == doctest::Approx(ref.per_dim[0].p_pos).epsilon(1e-12));
      DOCTEST_CHECK(out.metrics.at("synthetic_negatives").item<double>() == static_cast<double>(o.mix_count));
    }
  }
}

DOCTEST_TEST_CASE("mixing needs M >= 2: with M = 1 the row is plain InfoNCE") {
  torch::manual_seed(32);
  auto q = torch::randn({3, 4}, torch::kDouble);
  auto p = torch::randn({6, 4}, torch::kDouble);
  auto o = plain_options(0.05);
  auto plain = compute_loss(q, p, group_of(2), o).total.item<double>();
  for (auto mode : {MixMode::kPairwise, MixMode::kListwise}) {
    o.mix = mode;
    auto out = compute_loss(q, p, group_of(2), o);  // no generator needed either
    DOCTEST_CHECK(out.total.item<double>() == plain);
    DOCTEST_CHECK(out.metrics.at("synthetic_negatives").item<double>() == 0.0);
  }
}

DOCTEST_TEST_CASE("mixing gradients: flowing and detached, against finite differences") {
  torch::manual_seed(33);
  const std::int64_t b = 2, g = 4, d = 3, m = 3;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  BatchInfo bi = group_of(g);
  for (auto mode : {MixMode::kPairwise, MixMode::kListwise}) {
    DOCTEST_CAPTURE(static_cast<int>(mode));
    auto o = plain_options(0.1);
    o.focal_gamma = 0.5;
    o.mix = mode;
    o.mix_temperature = 0.3;
    o.mix_detach = false;
    auto flowing = kalm_test::evaluate(q, p, bi, o, 17);
    auto [fq, fp] = kalm_test::library_fd(q, p, bi, o, 17);
    DOCTEST_CHECK(kalm_test::relative_gap(fq, flowing.grad_q) < 1e-6);
    DOCTEST_CHECK(kalm_test::relative_gap(fp, flowing.grad_p) < 1e-6);

    o.mix_detach = true;
    auto detached = kalm_test::evaluate(q, p, bi, o, 17);
    DOCTEST_CHECK(detached.total == flowing.total);
    DOCTEST_CHECK((detached.grad_p - flowing.grad_p).abs().max().item<double>() > 1e-5);
    // Detached = the reference's finite difference with the synthetic vectors frozen.
    kalm_test::RefConfig rc;
    rc.b = b;
    rc.g = g;
    rc.dim = d;
    rc.tau = 0.1;
    rc.gamma = 0.5;
    rc.tau_mix = 0.3;
    if (mode == MixMode::kPairwise) {
      rc.mix = kalm_test::RefConfig::Mix::kPair;
      auto dr = kalm::loss::draw_pairwise_mixing(b, m, 1, 2.0, 2.0, seeded(17));
      rc.first = longs(dr.first);
      rc.second = longs(dr.second);
      rc.lambda = kalm_test::to_vec(dr.lambda);
    } else {
      rc.mix = kalm_test::RefConfig::Mix::kList;
    }
    auto base = kalm_test::reference_loss(kalm_test::to_vec(q), kalm_test::to_vec(p), rc);
    DOCTEST_CHECK(detached.total == doctest::Approx(base.total).epsilon(1e-12));
    std::vector<kalm_test::Vec> frozen = base.per_dim[0].h;
    rc.frozen_h = &frozen;
    auto [rq, rp] = kalm_test::finite_difference(
        [&](const torch::Tensor& x, const torch::Tensor& y) {
          return kalm_test::reference_loss(kalm_test::to_vec(x), kalm_test::to_vec(y), rc).total;
        },
        q, p);
    DOCTEST_CHECK(kalm_test::relative_gap(rq, detached.grad_q) < 1e-6);
    DOCTEST_CHECK(kalm_test::relative_gap(rp, detached.grad_p) < 1e-6);
  }
}

DOCTEST_TEST_CASE("pair-wise mixing: same seed, same loss; generator advanced per call") {
  torch::manual_seed(34);
  auto q = torch::randn({4, 6});
  auto p = torch::randn({32, 6});
  kalm::loss::LossOptions o;
  o.matryoshka_dims = {6, 3};
  o.matryoshka_weights = {1.0, 0.5};
  o.mix_count = 2;
  auto a = compute_loss(q, p, group_of(8), o, seeded(100)).total;
  auto b = compute_loss(q, p, group_of(8), o, seeded(100)).total;
  DOCTEST_CHECK(torch::equal(a, b));
  auto gen = seeded(100);
  auto first = compute_loss(q, p, group_of(8), o, gen).total;
  auto second = compute_loss(q, p, group_of(8), o, gen).total;
  DOCTEST_CHECK(torch::equal(first, a));
  DOCTEST_CHECK(!torch::equal(second, a));
}
