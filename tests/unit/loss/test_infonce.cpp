// InfoNCE: in-batch, in-group-only, mixed rows, pre-training (M = 0).
#include <doctest/doctest.h>

#include <cmath>

#include "kalm/error.h"
#include "kalm/loss/loss.h"
#include "reference.h"

using kalm::loss::BatchInfo;
using kalm::loss::compute_loss;
using kalm_test::plain_options;

namespace {

// The hand case: B = 2, G = 2 (M = 1), D = 2, unit vectors, τ = 1.
//   q1 = (1, 0)          q2 = (0, 1)
//   p1+ = (1, 0)  p1- = (0.6, 0.8)  p2+ = (0, 1)  p2- = (0.28, 0.96)
// Cosine rows (columns p1+, p1-, p2+, p2-):
//   row 1: [1, 0.6, 0, 0.28]      row 2: [0, 0.8, 1, 0.96]
// In-batch: l1 = log(e^1 + e^0.6 + e^0 + e^0.28) − 1 ≈ 0.926222
//           l2 = log(e^0 + e^0.8 + e^1 + e^0.96) − 1 ≈ 1.146577, mean ≈ 1.036399
// In-group: l1 = log(e^1 + e^0.6) − 1 = log(1 + e^−0.4)  ≈ 0.513015
//           l2 = log(e^1 + e^0.96) − 1 = log(1 + e^−0.04) ≈ 0.673347, mean ≈ 0.593181
torch::Tensor hand_q() { return torch::tensor({1.0, 0.0, 0.0, 1.0}, torch::kDouble).view({2, 2}); }
torch::Tensor hand_p() {
  return torch::tensor({1.0, 0.0, 0.6, 0.8, 0.0, 1.0, 0.28, 0.96}, torch::kDouble).view({4, 2});
}
double in_batch_l1() { return std::log(std::exp(1.0) + std::exp(0.6) + 1.0 + std::exp(0.28)) - 1.0; }
double in_batch_l2() { return std::log(1.0 + std::exp(0.8) + std::exp(1.0) + std::exp(0.96)) - 1.0; }
double in_group_l1() { return std::log1p(std::exp(-0.4)); }
double in_group_l2() { return std::log1p(std::exp(-0.04)); }

BatchInfo group_of(std::int64_t g, torch::Tensor in_batch = {}) {
  BatchInfo b;
  b.group_size = g;
  b.in_batch = std::move(in_batch);
  return b;
}

torch::Tensor bools(std::initializer_list<bool> v) {
  auto t = torch::empty({static_cast<std::int64_t>(v.size())}, torch::kBool);
  std::int64_t i = 0;
  for (bool x : v) t[i++] = x;
  return t;
}

}  // namespace

DOCTEST_TEST_CASE("InfoNCE, hand-computed: in-batch, in-group and a mixed batch") {
  auto o = plain_options(1.0);
  DOCTEST_SUBCASE("in-batch negatives (FlagEmbedding B x B·G, target i·G)") {
    auto out = compute_loss(hand_q(), hand_p(), group_of(2), o);
    DOCTEST_CHECK(out.total.item<double>() == doctest::Approx((in_batch_l1() + in_batch_l2()) / 2).epsilon(1e-14));
    DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(1.0363992748178843).epsilon(1e-12));
    DOCTEST_CHECK(out.components.at("infonce").item<double>() == doctest::Approx(1.0363992748178843).epsilon(1e-12));
    // Both positives beat every negative: 1 > 0.6, 0, 0.28 and 1 > 0, 0.8, 0.96.
    DOCTEST_CHECK(out.metrics.at("accuracy").item<double>() == 1.0);
    const double p_pos = (std::exp(-in_batch_l1()) + std::exp(-in_batch_l2())) / 2;
    DOCTEST_CHECK(out.metrics.at("p_pos").item<double>() == doctest::Approx(p_pos).epsilon(1e-12));
  }
  DOCTEST_SUBCASE("in-group only (B x G, target 0)") {
    auto out = compute_loss(hand_q(), hand_p(), group_of(2, bools({false, false})), o);
    DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(0.5931812098139932).epsilon(1e-12));
    DOCTEST_CHECK(out.total.item<double>() ==
                  doctest::Approx((in_group_l1() + in_group_l2()) / 2).epsilon(1e-14));
  }
  DOCTEST_SUBCASE("mixed: row 1 in-batch, row 2 in-group only") {
    auto out = compute_loss(hand_q(), hand_p(), group_of(2, bools({true, false})), o);
    // (0.926222 + 0.673347) / 2 ≈ 0.799785
    DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(0.7997845590778596).epsilon(1e-12));
    DOCTEST_CHECK(out.total.item<double>() ==
                  doctest::Approx((in_batch_l1() + in_group_l2()) / 2).epsilon(1e-14));
  }
  DOCTEST_SUBCASE("embeddings are normalised inside the loss") {
    auto out = compute_loss(3.0 * hand_q(), 0.5 * hand_p(), group_of(2), o);
    DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(1.0363992748178843).epsilon(1e-12));
    // Already unit rows + inputs_normalized gives the same value.
    auto on = o;
    on.inputs_normalized = true;
    auto out2 = compute_loss(hand_q(), hand_p(), group_of(2), on);
    DOCTEST_CHECK(out2.total.item<double>() == doctest::Approx(1.0363992748178843).epsilon(1e-12));
  }
  DOCTEST_SUBCASE("temperature divides the cosine") {
    // τ = 0.5 doubles every logit: in-group l1 = log(1 + e^(−0.8)), l2 = log(1 + e^(−0.08)).
    auto o2 = plain_options(0.5);
    auto out = compute_loss(hand_q(), hand_p(), group_of(2, bools({false, false})), o2);
    const double expected = (std::log1p(std::exp(-0.8)) + std::log1p(std::exp(-0.08))) / 2;
    DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(expected).epsilon(1e-13));
  }
}

DOCTEST_TEST_CASE("InfoNCE equals plain cross-entropy over the score matrix") {
  torch::manual_seed(3);
  const std::int64_t b = 4, g = 3, d = 5;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  const double tau = 0.07;
  auto out = compute_loss(q, p, group_of(g), plain_options(tau));
  namespace F = torch::nn::functional;
  auto qn = F::normalize(q, F::NormalizeFuncOptions().dim(1));
  auto pn = F::normalize(p, F::NormalizeFuncOptions().dim(1));
  auto ce = F::cross_entropy(torch::matmul(qn, pn.t()) / tau, torch::arange(b) * g);
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(ce.item<double>()).epsilon(1e-13));
  // γ = 0 is plain InfoNCE: the focal term is the InfoNCE term, bit for bit.
  DOCTEST_CHECK(torch::equal(out.components.at("focal"), out.components.at("infonce")));
  DOCTEST_CHECK(torch::equal(out.total.detach(), out.components.at("infonce")));
}

DOCTEST_TEST_CASE("InfoNCE against the loop reference: in-batch, in-group, mixed rows, M = 0") {
  torch::manual_seed(11);
  struct Case {
    std::int64_t b, g;
    std::vector<bool> in_batch;
  };
  for (const Case& c : {Case{3, 4, {}}, Case{3, 4, {false, false, false}}, Case{4, 3, {true, false, false, true}},
                        Case{5, 1, {}}, Case{2, 2, {false, true}}}) {
    const std::int64_t d = 6;
    auto q = torch::randn({c.b, d}, torch::kDouble);
    auto p = torch::randn({c.b * c.g, d}, torch::kDouble);
    kalm_test::RefConfig rc;
    rc.b = c.b;
    rc.g = c.g;
    rc.dim = d;
    rc.tau = 0.05;
    rc.in_batch = c.in_batch;
    auto ref = kalm_test::reference_loss(kalm_test::to_vec(q), kalm_test::to_vec(p), rc);
    BatchInfo bi = group_of(c.g);
    if (!c.in_batch.empty()) {
      bi.in_batch = torch::empty({c.b}, torch::kBool);
      for (std::int64_t i = 0; i < c.b; ++i) bi.in_batch[i] = static_cast<bool>(c.in_batch[i]);
    }
    auto out = compute_loss(q, p, bi, plain_options(0.05));
    DOCTEST_CAPTURE(c.b);
    DOCTEST_CAPTURE(c.g);
    DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(ref.total).epsilon(1e-12));
    DOCTEST_CHECK(out.metrics.at("accuracy").item<double>() == doctest::Approx(ref.per_dim[0].accuracy));
    DOCTEST_CHECK(out.metrics.at("p_pos").item<double>() == doctest::Approx(ref.per_dim[0].p_pos).epsilon(1e-12));
  }
}

DOCTEST_TEST_CASE("pre-training (M = 0): in-batch only, the default mixing is inert and needs no generator") {
  // B = 3, G = 1, D = 2, τ = 1: q = p rows = e1, e2, (e1+e2)/√2.
  // Row 1 cosines [1, 0, 1/√2] -> l1 = log(e + 1 + e^(1/√2)) − 1; row 2 the same by symmetry;
  // row 3 cosines [1/√2, 1/√2, 1] -> l3 = log(2 e^(1/√2) + e) − 1.
  auto q = torch::tensor({1.0, 0.0, 0.0, 1.0, 1.0, 1.0}, torch::kDouble).view({3, 2});
  auto p = q.clone();
  kalm::loss::LossOptions o;  // recipe defaults: focal γ = 0.5, pair-wise mixing
  o.temperature = 1.0;
  o.focal_gamma = 0.0;
  o.matryoshka_dims.clear();
  o.matryoshka_weights.clear();
  auto out = compute_loss(q, p, group_of(1), o);  // no generator: mixing needs M >= 2
  const double r = std::exp(1.0 / std::sqrt(2.0));
  const double l1 = std::log(std::exp(1.0) + 1.0 + r) - 1.0;
  const double l3 = std::log(2 * r + std::exp(1.0)) - 1.0;
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx((2 * l1 + l3) / 3).epsilon(1e-13));
  DOCTEST_CHECK(out.metrics.at("synthetic_negatives").item<double>() == 0.0);
}

DOCTEST_TEST_CASE("InfoNCE gradients match central finite differences (double)") {
  torch::manual_seed(5);
  const std::int64_t b = 3, g = 3, d = 4;
  auto q = torch::randn({b, d}, torch::kDouble);
  auto p = torch::randn({b * g, d}, torch::kDouble);
  auto o = plain_options(0.1);
  for (auto mask : {torch::Tensor(), bools({false, false, false}), bools({true, false, true})}) {
    auto bi = group_of(g, mask);
    auto ev = kalm_test::evaluate(q, p, bi, o);
    auto [fq, fp] = kalm_test::library_fd(q, p, bi, o);
    DOCTEST_CHECK(kalm_test::relative_gap(fq, ev.grad_q) < 1e-6);
    DOCTEST_CHECK(kalm_test::relative_gap(fp, ev.grad_p) < 1e-6);
    DOCTEST_CHECK(ev.grad_q.abs().max().item<double>() > 1e-3);
  }
  // In-group only: row 0's loss sees only group 0, so its passages' gradient is
  // that of a one-query batch, scaled by the 1/B of the mean.
  auto only0 = kalm_test::evaluate(q.narrow(0, 0, 1), p.narrow(0, 0, g), group_of(g, bools({false})), o);
  auto full = kalm_test::evaluate(q, p, group_of(g, bools({false, false, false})), o);
  // Mean over 3 rows vs 1 row: row 0's gradient is scaled by 1/3.
  DOCTEST_CHECK(torch::allclose(full.grad_p.narrow(0, 0, g), only0.grad_p / 3, 1e-12, 1e-14));
}

DOCTEST_TEST_CASE("lower precision inputs are computed in float32") {
  torch::manual_seed(8);
  auto q = torch::randn({3, 8});
  auto p = torch::randn({6, 8});
  auto o = plain_options(0.05);
  auto ref = compute_loss(q.to(torch::kDouble), p.to(torch::kDouble), group_of(2), o).total.item<double>();
  auto f32 = compute_loss(q, p, group_of(2), o).total;
  DOCTEST_CHECK((f32.scalar_type() == torch::kFloat));
  DOCTEST_CHECK(f32.item<double>() == doctest::Approx(ref).epsilon(1e-5));
  auto bf = compute_loss(q.to(torch::kBFloat16), p.to(torch::kBFloat16), group_of(2), o).total;
  DOCTEST_CHECK((bf.scalar_type() == torch::kFloat));
  auto rounded = compute_loss(q.to(torch::kBFloat16).to(torch::kDouble), p.to(torch::kBFloat16).to(torch::kDouble),
                              group_of(2), o)
                     .total.item<double>();
  DOCTEST_CHECK(bf.item<double>() == doctest::Approx(rounded).epsilon(1e-5));
}

// False negatives: a copy of a row's positive elsewhere in the batch.
DOCTEST_TEST_CASE("duplicate_positives marks the other copies of each row's positive") {
  using kalm::loss::duplicate_positives;
  DOCTEST_SUBCASE("no copies: no mask at all") {
    DOCTEST_CHECK_FALSE(duplicate_positives({"a", "x", "b", "y"}, 2).defined());
  }
  DOCTEST_SUBCASE("a hard negative equal to another row's positive is not a copy of any own positive") {
    // Row 0's negative equals row 1's positive: row 1's mask marks column 1.
    auto m = duplicate_positives({"a", "b", "b", "y"}, 2);
    DOCTEST_REQUIRE(m.defined());
    DOCTEST_CHECK(m.sizes() == torch::IntArrayRef({2, 4}));
    DOCTEST_CHECK(m.sum().item<std::int64_t>() == 1);
    DOCTEST_CHECK(m[1][1].item<bool>());
    DOCTEST_CHECK_FALSE(m[1][2].item<bool>());  // the positive's own column never
  }
  DOCTEST_SUBCASE("two rows with the same positive mask each other's, pre-training layout (G = 1)") {
    auto m = duplicate_positives({"d", "e", "d"}, 1);
    DOCTEST_REQUIRE(m.defined());
    auto expected = torch::tensor({0, 0, 1, 0, 0, 0, 1, 0, 0}, torch::kLong).view({3, 3}).to(torch::kBool);
    DOCTEST_CHECK(torch::equal(m, expected));
  }
  DOCTEST_SUBCASE("passages that are not whole groups are refused") {
    DOCTEST_CHECK_THROWS_AS(duplicate_positives({"a", "b", "c"}, 2), kalm::UsageError);
  }
}

DOCTEST_TEST_CASE("InfoNCE leaves copies of a row's positive out of that row") {
  auto o = plain_options(1.0);
  // The hand case with p2- a copy of p1+ (same text): row 1 loses column 3.
  auto p = hand_p().clone();
  p[3][0] = 1.0;
  p[3][1] = 0.0;
  BatchInfo info = group_of(2);
  info.duplicates = kalm::loss::duplicate_positives({"one", "x", "two", "one"}, 2);
  DOCTEST_REQUIRE(info.duplicates.defined());
  // Row 1: cosines [1, 0.6, 0, (1 masked)]; row 2: [0, 0.8, 1, 0] (unchanged: not its positive's copy).
  const double l1 = std::log(std::exp(1.0) + std::exp(0.6) + 1.0) - 1.0;
  const double l2 = std::log(1.0 + std::exp(0.8) + std::exp(1.0) + 1.0) - 1.0;
  auto out = compute_loss(hand_q(), p, info, o);
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx((l1 + l2) / 2).epsilon(1e-14));
  DOCTEST_CHECK(out.metrics.at("masked_duplicates").item<double>() == 1.0);
  // Row 1's positive ties the copy, which no longer counts against it.
  DOCTEST_CHECK(out.metrics.at("accuracy").item<double>() == 1.0);

  auto keep = o;
  keep.mask_duplicates = false;
  auto kept = compute_loss(hand_q(), p, info, keep);
  const double l1_kept = std::log(std::exp(1.0) + std::exp(0.6) + 1.0 + std::exp(1.0)) - 1.0;
  DOCTEST_CHECK(kept.total.item<double>() == doctest::Approx((l1_kept + l2) / 2).epsilon(1e-14));
  DOCTEST_CHECK(kept.metrics.at("masked_duplicates").item<double>() == 0.0);
  DOCTEST_CHECK(kept.metrics.at("accuracy").item<double>() == 0.5);

  // Focal weights and the in-group policy see the same mask.
  auto focal = o;
  focal.focal_gamma = 1.0;
  auto f = compute_loss(hand_q(), p, info, focal);
  const double w1 = 1.0 - std::exp(-l1), w2 = 1.0 - std::exp(-l2);
  DOCTEST_CHECK(f.total.item<double>() == doctest::Approx((w1 * l1 + w2 * l2) / 2).epsilon(1e-12));

  BatchInfo bad = group_of(2);
  bad.duplicates = torch::zeros({2, 3}, torch::kBool);
  DOCTEST_CHECK_THROWS_AS(compute_loss(hand_q(), p, bad, o), kalm::UsageError);
}

DOCTEST_TEST_CASE("symmetric InfoNCE: each positive also ranks the batch's queries") {
  auto o = plain_options(1.0);
  o.symmetric = true;
  // Hand case, passages p1+ = (1, 0), p2+ = (0, 1) against q1 = (1, 0), q2 = (0, 1):
  // column i of [s(q_j, p_i+)] = identity, so back_i = log(e^1 + e^0) - 1 for both.
  const double back = std::log(std::exp(1.0) + 1.0) - 1.0;
  auto out = compute_loss(hand_q(), hand_p(), group_of(2), o);
  const double forward = (in_batch_l1() + in_batch_l2()) / 2;
  DOCTEST_CHECK(out.components.at("backward").item<double>() == doctest::Approx(back).epsilon(1e-14));
  DOCTEST_CHECK(out.total.item<double>() == doctest::Approx((forward + back) / 2).epsilon(1e-14));

  // A row scored in-group only takes no part: its query is no negative of the
  // other positive, and its positive has no backward term (mean over 1 row).
  auto mixed = compute_loss(hand_q(), hand_p(), group_of(2, bools({true, false})), o);
  DOCTEST_CHECK(mixed.components.at("backward").item<double>() == doctest::Approx(0.0).epsilon(1e-14));
  DOCTEST_CHECK(mixed.total.item<double>() ==
                doctest::Approx(((in_batch_l1() + in_group_l2()) / 2 + 0.0) / 2).epsilon(1e-14));

  // Two queries with the same positive text: neither query is a negative of the other's positive.
  auto p = hand_p().clone();
  p[2][0] = 1.0;
  p[2][1] = 0.0;  // p2+ = p1+
  BatchInfo dup = group_of(2);
  dup.duplicates = kalm::loss::duplicate_positives({"same", "x", "same", "y"}, 2);
  auto d = compute_loss(hand_q(), p, dup, o);
  DOCTEST_CHECK(d.components.at("backward").item<double>() == doctest::Approx(0.0).epsilon(1e-14));

  // Off by default: no backward component, the plain loss.
  auto plain = compute_loss(hand_q(), hand_p(), group_of(2), plain_options(1.0));
  DOCTEST_CHECK(plain.components.count("backward") == 0);
  DOCTEST_CHECK(plain.total.item<double>() == doctest::Approx(forward).epsilon(1e-14));
}
