// Bad shapes, bad options and the in-batch policy by record type.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>

#include "kalm/error.h"
#include "kalm/loss/loss.h"
#include "kalm/loss/mixing.h"
#include "reference.h"

using kalm::loss::BatchInfo;
using kalm::loss::compute_loss;
using kalm::loss::LossOptions;
using kalm::loss::MixMode;
using kalm_test::plain_options;
using kalm_test::seeded;

namespace {

// Runs f, requires a kalm::UsageError whose message contains `needle`.
void check_usage_error(const std::function<void()>& f, const std::string& needle) {
  bool thrown = false;
  try {
    f();
  } catch (const kalm::UsageError& e) {
    thrown = true;
    const std::string what = e.what();
    DOCTEST_INFO("message: " << what);
    DOCTEST_CHECK(what.find(needle) != std::string::npos);
  }
  DOCTEST_CHECK_MESSAGE(thrown, "expected a kalm::UsageError mentioning '" << needle << "'");
}

BatchInfo group_of(std::int64_t g) {
  BatchInfo bi;
  bi.group_size = g;
  return bi;
}

}  // namespace

DOCTEST_TEST_CASE("bad tensor shapes throw UsageError naming the tensor and sizes") {
  auto q = torch::randn({2, 4});
  auto p = torch::randn({6, 4});
  auto o = plain_options(0.05);
  check_usage_error([&] { compute_loss(torch::randn({4}), p, group_of(3), o); }, "queries must be a 2-D tensor [B, D] (got [4])");
  check_usage_error([&] { compute_loss(q, torch::randn({2, 3, 4}), group_of(3), o); }, "passages must be a 2-D");
  check_usage_error([&] { compute_loss(torch::Tensor(), p, group_of(3), o); }, "got undefined");
  check_usage_error([&] { compute_loss(q, torch::randn({6, 5}), group_of(3), o); }, "differ in embedding size");
  check_usage_error([&] { compute_loss(q, p, group_of(2), o); }, "must have B·G = 2·2 = 4 rows");
  check_usage_error([&] { compute_loss(q, p, group_of(0), o); }, "group_size must be >= 1");
  check_usage_error([&] { compute_loss(torch::randn({0, 4}), torch::randn({0, 4}), group_of(1), o); }, "no queries");
  check_usage_error([&] { compute_loss(q.to(torch::kLong), p, group_of(3), o); }, "floating point");
  check_usage_error([&] { compute_loss(torch::randn({2, 0}), torch::randn({6, 0}), group_of(3), o); }, "no columns");

  BatchInfo bad_mask = group_of(3);
  bad_mask.in_batch = torch::ones({3}, torch::kBool);
  check_usage_error([&] { compute_loss(q, p, bad_mask, o); }, "in_batch must be a [B] = [2] bool tensor (got [3]");
  bad_mask.in_batch = torch::ones({2}, torch::kLong);
  check_usage_error([&] { compute_loss(q, p, bad_mask, o); }, "in_batch must be a [B] = [2] bool tensor");

  BatchInfo bad_teacher = group_of(3);
  bad_teacher.teacher_scores = torch::randn({2, 2});
  check_usage_error([&] { compute_loss(q, p, bad_teacher, o); }, "teacher_scores must be [B, G] = [2, 3] (got [2, 2])");
  bad_teacher.teacher_scores = torch::tensor({{1.0, std::nan(""), 0.0}, {0.0, 0.0, 0.0}});
  check_usage_error([&] { compute_loss(q, p, bad_teacher, o); }, "teacher_scores contain NaN");
  bad_teacher.teacher_scores = torch::zeros({2, 3}, torch::kLong);
  check_usage_error([&] { compute_loss(q, p, bad_teacher, o); }, "teacher_scores must be floating point");
}

DOCTEST_TEST_CASE("rows without any negative are refused") {
  auto o = plain_options(0.05);
  // One query, one passage: nothing to contrast with.
  check_usage_error([&] { compute_loss(torch::randn({1, 4}), torch::randn({1, 4}), group_of(1), o); },
                    "has no negatives");
  // G = 1 (no hard negatives) and row 1 without in-batch negatives.
  BatchInfo bi = group_of(1);
  bi.in_batch = torch::tensor({1, 0, 1}, torch::kLong).to(torch::kBool);
  check_usage_error([&] { compute_loss(torch::randn({3, 4}), torch::randn({3, 4}), bi, o); },
                    "row 1 has no negatives");
  // With G >= 2 a row without in-batch negatives still has its own hard negatives: fine.
  bi = group_of(2);
  bi.in_batch = torch::zeros({3}, torch::kBool);
  DOCTEST_CHECK(std::isfinite(compute_loss(torch::randn({3, 4}), torch::randn({6, 4}), bi, o).total.item<double>()));
}

DOCTEST_TEST_CASE("bad options throw UsageError naming the field") {
  auto q = torch::randn({2, 4});
  auto p = torch::randn({6, 4});
  auto run = [&](const LossOptions& o) { compute_loss(q, p, group_of(3), o, seeded(1)); };
  auto o = plain_options(0.05);
  o.temperature = 0;
  check_usage_error([&] { run(o); }, "temperature must be a finite number > 0 (got 0)");
  o = plain_options(0.05);
  o.temperature = std::nan("");
  check_usage_error([&] { run(o); }, "temperature");
  o = plain_options(0.05);
  o.focal_gamma = -0.5;
  check_usage_error([&] { run(o); }, "focal_gamma");
  o = plain_options(0.05);
  o.mix_count = 0;
  check_usage_error([&] { run(o); }, "mix_count must be >= 1");
  o = plain_options(0.05);
  o.mix = MixMode::kListwise;
  o.mix_count = 2;
  check_usage_error([&] { run(o); }, "mix_count must be 1 with list-wise");
  o = plain_options(0.05);
  o.mix_beta_a = 0;
  check_usage_error([&] { run(o); }, "mix_beta_a");
  o = plain_options(0.05);
  o.mix_temperature = -1.0;
  check_usage_error([&] { run(o); }, "mix_temperature");
  o = plain_options(0.05);
  o.matryoshka_dims = {4, 2};
  o.matryoshka_weights = {1.0};
  check_usage_error([&] { run(o); }, "differ in length (2 vs 1)");
  o.matryoshka_dims = {4, 4};
  o.matryoshka_weights = {1.0, 0.5};
  check_usage_error([&] { run(o); }, "dim 4 appears twice");
  o.matryoshka_dims = {4, 0};
  check_usage_error([&] { run(o); }, "dim 0 must be >= 1");
  o.matryoshka_dims = {8, 4};
  check_usage_error([&] { run(o); }, "dim 8 exceeds the embedding size 4");
  o.matryoshka_dims = {3, 2};
  check_usage_error([&] { run(o); }, "the largest dim (3) must be the embedding size 4");
  o.matryoshka_dims = {4, 2};
  o.matryoshka_weights = {1.0, -0.1};
  check_usage_error([&] { run(o); }, "matryoshka_weights");
  o.matryoshka_weights = {0.0, 0.0};
  check_usage_error([&] { run(o); }, "all zero");
  o = plain_options(0.05);
  o.teacher_temperature = 0;
  check_usage_error([&] { run(o); }, "teacher_temperature");
  o = plain_options(0.05);
  o.student_temperature = -1;
  check_usage_error([&] { run(o); }, "student_temperature");
  o = plain_options(0.05);
  o.distill_weight = -1;
  check_usage_error([&] { run(o); }, "distill_weight");
  o = plain_options(0.05);
  o.distill_only = true;
  check_usage_error([&] { run(o); }, "distill_only needs teacher scores");
  o.distill_weight = 0;
  check_usage_error([&] { kalm::loss::validate_options(o); }, "nothing would be trained");
  // The defaults are valid.
  DOCTEST_CHECK_NOTHROW(kalm::loss::validate_options(LossOptions{}));
}

DOCTEST_TEST_CASE("pair-wise mixing without a generator is refused, not silently unseeded") {
  auto o = plain_options(0.05);
  o.mix = MixMode::kPairwise;
  check_usage_error([&] { compute_loss(torch::randn({2, 4}), torch::randn({6, 4}), group_of(3), o); },
                    "needs a seeded torch::Generator");
  // List-wise mixing is deterministic and needs none.
  o.mix = MixMode::kListwise;
  DOCTEST_CHECK(std::isfinite(
      compute_loss(torch::randn({2, 4}), torch::randn({6, 4}), group_of(3), o).total.item<double>()));
  check_usage_error([&] { kalm::loss::draw_pairwise_mixing(2, 1, 1, 2, 2, seeded(1)); }, "at least 2 hard negatives");
  check_usage_error([&] { kalm::loss::draw_pairwise_mixing(2, 3, 0, 2, 2, seeded(1)); }, ">= 1");
  check_usage_error([&] { kalm::loss::draw_pairwise_mixing(2, 3, 1, 0, 2, seeded(1)); }, "Beta parameters");
  check_usage_error([&] { kalm::loss::mix_listwise(torch::randn({2, 3}), torch::randn({2, 4, 2}), 1.0); },
                    "need queries [B, d] and negatives [B, M, d]");
}

DOCTEST_TEST_CASE("in-batch policy by record type") {
  for (const char* t : {"", "retrieval", "sts", "reranking", "pair", "bitext"})
    DOCTEST_CHECK(kalm::loss::in_batch_negatives_for_type(t));
  DOCTEST_CHECK(!kalm::loss::in_batch_negatives_for_type("classification"));
  DOCTEST_CHECK(!kalm::loss::in_batch_negatives_for_type("clustering"));
  check_usage_error([] { kalm::loss::in_batch_negatives_for_type("Retrieval"); }, "unknown record type 'Retrieval'");
  auto mask = kalm::loss::in_batch_mask({"retrieval", "classification", "sts", "clustering"}, torch::kCPU);
  DOCTEST_REQUIRE((mask.scalar_type() == torch::kBool));
  DOCTEST_REQUIRE(mask.sizes() == torch::IntArrayRef({4}));
  DOCTEST_CHECK(mask[0].item<bool>());
  DOCTEST_CHECK(!mask[1].item<bool>());
  DOCTEST_CHECK(mask[2].item<bool>());
  DOCTEST_CHECK(!mask[3].item<bool>());
  check_usage_error([] { kalm::loss::in_batch_mask({"sts", "qa"}, torch::kCPU); }, "batch row 1: unknown record type 'qa'");
}
