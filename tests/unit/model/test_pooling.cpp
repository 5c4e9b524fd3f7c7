// Pooling, normalisation and Matryoshka truncation on hand-checked values.

#include <doctest/doctest.h>

#include "kalm/error.h"
#include "kalm/model/pooling.h"

using kalm::model::Pooling;

namespace {

// hidden[b, t, :] = {10 b + t, -(10 b + t)}; rows of length 3 and 1 (right-padded).
torch::Tensor make_hidden() {
  torch::Tensor h = torch::zeros({2, 3, 2});
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 3; ++t) {
      h[b][t][0] = 10.0 * b + t;
      h[b][t][1] = -(10.0 * b + t);
    }
  return h;
}

}  // namespace

DOCTEST_TEST_CASE("pooling: mean, last and cls on a right-padded batch") {
  const torch::Tensor h = make_hidden();
  const torch::Tensor mask = torch::tensor({{1, 1, 1}, {1, 0, 0}}, torch::kLong);
  const torch::Tensor mean = kalm::model::pool(h, mask, Pooling::Mean);
  DOCTEST_CHECK((mean.scalar_type() == torch::kFloat));
  DOCTEST_CHECK(mean[0][0].item<float>() == doctest::Approx(1.0));
  DOCTEST_CHECK(mean[0][1].item<float>() == doctest::Approx(-1.0));
  DOCTEST_CHECK(mean[1][0].item<float>() == doctest::Approx(10.0));
  const torch::Tensor last = kalm::model::pool(h, mask, Pooling::LastToken);
  DOCTEST_CHECK(last[0][0].item<float>() == 2.0f);
  DOCTEST_CHECK(last[1][0].item<float>() == 10.0f);
  const torch::Tensor cls = kalm::model::pool(h, mask, Pooling::Cls);
  DOCTEST_CHECK(cls[0][0].item<float>() == 0.0f);
  DOCTEST_CHECK(cls[1][0].item<float>() == 10.0f);
}

DOCTEST_TEST_CASE("pooling: last token with left padding and a bool mask, bf16 input") {
  const torch::Tensor h = make_hidden().to(torch::kBFloat16);
  const torch::Tensor mask = torch::tensor({{0, 1, 1}, {0, 0, 1}}).to(torch::kBool);
  const torch::Tensor last = kalm::model::pool(h, mask, Pooling::LastToken);
  DOCTEST_CHECK((last.scalar_type() == torch::kFloat));
  DOCTEST_CHECK(last[0][0].item<float>() == 2.0f);
  DOCTEST_CHECK(last[1][0].item<float>() == 12.0f);
  const torch::Tensor mean = kalm::model::pool(h, mask, Pooling::Mean);
  DOCTEST_CHECK(mean[0][0].item<float>() == doctest::Approx(1.5));
}

DOCTEST_TEST_CASE("pooling: bad input is refused") {
  const torch::Tensor h = make_hidden();
  DOCTEST_CHECK_THROWS_AS(kalm::model::pool(h, torch::ones({2, 4}), Pooling::Mean), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::model::pool(h.select(2, 0), torch::ones({2, 3}), Pooling::Mean), kalm::UsageError);
  try {
    kalm::model::pool(h, torch::tensor({{1, 1, 0}, {0, 0, 0}}), Pooling::Mean);
    DOCTEST_FAIL("expected UsageError");
  } catch (const kalm::UsageError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("sequence 1") != std::string::npos);
  }
}

DOCTEST_TEST_CASE("pooling: normalisation and Matryoshka truncation") {
  const torch::Tensor x = torch::tensor({{3.0f, 4.0f, 12.0f}, {0.0f, 0.0f, 0.0f}});
  const torch::Tensor n = kalm::model::l2_normalize(x);
  DOCTEST_CHECK(n[0][0].item<float>() == doctest::Approx(3.0 / 13.0));
  DOCTEST_CHECK(n[0][2].item<float>() == doctest::Approx(12.0 / 13.0));
  DOCTEST_CHECK(n[1].abs().sum().item<float>() == 0.0f);  // zero stays zero, no NaN
  const torch::Tensor m = kalm::model::matryoshka(x, 2);
  DOCTEST_CHECK(m.size(1) == 2);
  DOCTEST_CHECK(m[0][0].item<float>() == doctest::Approx(0.6));
  DOCTEST_CHECK(m[0][1].item<float>() == doctest::Approx(0.8));
  DOCTEST_CHECK_THROWS_AS(kalm::model::matryoshka(x, 4), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::model::matryoshka(x, 0), kalm::UsageError);
}

DOCTEST_TEST_CASE("pooling: names") {
  DOCTEST_CHECK(kalm::model::parse_pooling("mean") == Pooling::Mean);
  DOCTEST_CHECK(kalm::model::parse_pooling("last") == Pooling::LastToken);
  DOCTEST_CHECK(kalm::model::parse_pooling("lasttoken") == Pooling::LastToken);
  DOCTEST_CHECK(kalm::model::parse_pooling("cls") == Pooling::Cls);
  DOCTEST_CHECK(kalm::model::pooling_name(Pooling::LastToken) == "last");
  DOCTEST_CHECK_THROWS_AS(kalm::model::parse_pooling("max"), kalm::UsageError);
}
