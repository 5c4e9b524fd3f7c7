#include <doctest/doctest.h>

#include <limits>

#include "kalm/encode/engine.h"
#include "kalm/error.h"

namespace {
// A stand-in model: embedding = [sum of ids, number of tokens, longest batch row].
// It records every batch it sees, so the tests can check shapes and padding.
class FakeEmbedder : public kalm::encode::BatchEmbedder {
 public:
  torch::Tensor embed(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& pool_mask) override {
    shapes.push_back({ids.size(0), ids.size(1)});
    attended.push_back(mask.sum().item<std::int64_t>());
    auto sum = (ids * pool_mask).sum(1).to(torch::kFloat32);
    auto count = pool_mask.sum(1).to(torch::kFloat32);
    auto width = torch::full({ids.size(0)}, static_cast<float>(ids.size(1)));
    return torch::stack({sum, count, width}, 1);
  }
  torch::Device device() const override { return torch::kCPU; }
  std::int64_t pad_id() const override { return 7; }  // padding must be masked out
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;
  std::vector<std::int64_t> attended;  // tokens the attention mask admits, per batch
};
}  // namespace

DOCTEST_TEST_CASE("plan_batches respects the token budget and sorts longest first") {
  kalm::encode::EngineOptions opt;
  opt.batch_tokens = 10;
  opt.max_padding = 1.0;  // the budget alone decides here
  auto plan = kalm::encode::plan_batches({2, 5, 1, 5, 3, 12}, opt);
  // Sorted: 12(#5) 5(#1) 5(#3) 3(#4) 2(#0) 1(#2).
  DOCTEST_REQUIRE(plan.size() == 3);
  DOCTEST_CHECK(plan[0] == std::vector<std::size_t>{5});        // over budget alone
  DOCTEST_CHECK(plan[1] == std::vector<std::size_t>{1, 3});     // 2 × 5 = 10
  DOCTEST_CHECK(plan[2] == std::vector<std::size_t>{4, 0, 2});  // 3 × 3 = 9
  opt.sort_by_length = false;
  plan = kalm::encode::plan_batches({2, 5, 1, 5, 3, 12}, opt);
  DOCTEST_CHECK(plan[0] == std::vector<std::size_t>{0, 1});  // input order: 2 × 5
  opt.batch_tokens = 0;
  DOCTEST_CHECK_THROWS_AS(kalm::encode::plan_batches({1}, opt), kalm::UsageError);
}

DOCTEST_TEST_CASE("plan_batches caps the rows per batch (CUDA's attention grid) when asked") {
  kalm::encode::EngineOptions opt;
  opt.batch_tokens = 1000;
  opt.max_padding = 1.0;
  opt.max_rows = 3;
  // 8 one-token texts fit the budget in one batch; at most 3 rows each.
  auto plan = kalm::encode::plan_batches(std::vector<std::size_t>(8, 1), opt);
  DOCTEST_REQUIRE(plan.size() == 3);
  DOCTEST_CHECK(plan[0] == std::vector<std::size_t>{0, 1, 2});
  DOCTEST_CHECK(plan[1] == std::vector<std::size_t>{3, 4, 5});
  DOCTEST_CHECK(plan[2] == std::vector<std::size_t>{6, 7});
  opt.max_rows = 0;  // no cap
  DOCTEST_CHECK(kalm::encode::plan_batches(std::vector<std::size_t>(8, 1), opt).size() == 1);
  // The GPU's cap, on a corpus of tiny texts under a large budget.
  opt.batch_tokens = 1 << 20;
  opt.max_rows = kalm::encode::kMaxGpuBatchRows;
  plan = kalm::encode::plan_batches(std::vector<std::size_t>(150000, 2), opt);
  DOCTEST_REQUIRE(plan.size() == 3);
  DOCTEST_CHECK(plan[0].size() == 65535);
  DOCTEST_CHECK(plan[2].size() == 150000 - 2 * 65535);
  opt.max_rows = -1;
  DOCTEST_CHECK_THROWS_AS(kalm::encode::plan_batches({1}, opt), kalm::UsageError);
}

DOCTEST_TEST_CASE("plan_batches splits sorted batches that would be mostly padding") {
  kalm::encode::EngineOptions opt;
  opt.batch_tokens = 1000;
  opt.max_padding = 0.25;
  // 100 and 80 share a batch (20% padding); 70 would be 30% padding; 10 too.
  auto plan = kalm::encode::plan_batches({10, 100, 70, 80}, opt);
  DOCTEST_REQUIRE(plan.size() == 3);
  DOCTEST_CHECK(plan[0] == std::vector<std::size_t>{1, 3});
  DOCTEST_CHECK(plan[1] == std::vector<std::size_t>{2});
  DOCTEST_CHECK(plan[2] == std::vector<std::size_t>{0});
  opt.max_padding = 1.0;  // budget only
  DOCTEST_CHECK(kalm::encode::plan_batches({10, 100, 70, 80}, opt).size() == 1);
  opt.max_padding = 2.0;
  DOCTEST_CHECK_THROWS_AS(kalm::encode::plan_batches({1}, opt), kalm::UsageError);
}

DOCTEST_TEST_CASE("Engine without a batch budget takes its device's default") {
  DOCTEST_CHECK(kalm::encode::default_batch_tokens(torch::kCPU) == 1024);
  DOCTEST_CHECK(kalm::encode::default_batch_tokens(torch::Device(torch::kCUDA, 0)) == 16384);
  FakeEmbedder model;  // on the CPU
  kalm::encode::EngineOptions opt;
  DOCTEST_CHECK(opt.batch_tokens == 0);  // unset
  kalm::encode::Engine engine(model, opt);
  // 64 rows of 40 tokens: 25 fit in 1024 padded tokens (26 x 40 = 1040 do not).
  std::vector<std::vector<std::int32_t>> seqs(64, std::vector<std::int32_t>(40, 1));
  auto out = engine.embed(seqs);
  DOCTEST_REQUIRE(out.size(0) == 64);
  DOCTEST_REQUIRE(model.shapes.size() == 3);
  DOCTEST_CHECK(model.shapes[0] == std::pair<std::int64_t, std::int64_t>{25, 40});
  DOCTEST_CHECK(model.shapes[1] == std::pair<std::int64_t, std::int64_t>{25, 40});
  DOCTEST_CHECK(model.shapes[2] == std::pair<std::int64_t, std::int64_t>{14, 40});
}

DOCTEST_TEST_CASE("Engine restores input order and masks padding") {
  FakeEmbedder model;
  kalm::encode::EngineOptions opt;
  opt.batch_tokens = 8;
  kalm::encode::Engine engine(model, opt);
  std::vector<std::vector<std::int32_t>> seqs = {{1, 2}, {10, 20, 30, 40}, {5}, {3, 3, 3}};
  std::int64_t last_done = 0;
  auto out = engine.embed(seqs, [&](std::int64_t done, std::int64_t) { last_done = done; });
  DOCTEST_REQUIRE(out.sizes() == torch::IntArrayRef({4, 3}));
  DOCTEST_CHECK(out[0][0].item<float>() == 3);
  DOCTEST_CHECK(out[1][0].item<float>() == 100);
  DOCTEST_CHECK(out[2][0].item<float>() == 5);
  DOCTEST_CHECK(out[3][0].item<float>() == 9);
  DOCTEST_CHECK(out[1][1].item<float>() == 4);
  DOCTEST_CHECK(last_done == 4);
  for (auto [rows, cols] : model.shapes) DOCTEST_CHECK(rows * cols <= 8);
  DOCTEST_CHECK(engine.stats().tokens == 10);
  DOCTEST_CHECK(engine.stats().sequences == 4);
  DOCTEST_CHECK(engine.stats().padded_tokens >= 10);
}

DOCTEST_TEST_CASE("Engine: each batch is read back after the next one is handed to the embedder") {
  // On a GPU the next batch then runs while the host reads this one; the
  // order is the same on every device, so the CPU checks it.
  FakeEmbedder model;
  kalm::encode::EngineOptions opt;
  opt.batch_tokens = 4;
  opt.max_padding = 1.0;
  kalm::encode::Engine engine(model, opt);
  // Lengths 4, 4, 2, 2, 1 -> batches {0}, {1}, {2, 3}, {4}.
  std::vector<std::vector<std::int32_t>> seqs = {{1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3}, {4, 4}, {5}};
  std::vector<std::size_t> calls_at_progress;
  std::vector<std::int64_t> done_at_progress;
  auto out = engine.embed(seqs, [&](std::int64_t done, std::int64_t) {
    calls_at_progress.push_back(model.shapes.size());
    done_at_progress.push_back(done);
  });
  DOCTEST_CHECK(calls_at_progress == std::vector<std::size_t>{2, 3, 4, 4});
  DOCTEST_CHECK(done_at_progress == std::vector<std::int64_t>{1, 2, 4, 5});
  DOCTEST_CHECK(out.index({torch::indexing::Slice(), 0}).equal(torch::tensor({4.0f, 8.0f, 6.0f, 8.0f, 5.0f})));
  DOCTEST_CHECK(engine.stats().batches == 4);
}

DOCTEST_TEST_CASE("Engine: pool_from leaves each row's leading tokens out of pooling, not out of attention") {
  FakeEmbedder model;
  kalm::encode::Engine engine(model, {});
  std::vector<std::vector<std::int32_t>> seqs = {{1, 2, 30}, {10, 20, 30, 40}, {5, 6}};
  auto out = engine.embed(seqs, {}, {2, 1, 0});
  DOCTEST_CHECK(out[0][0].item<float>() == 30);   // 1, 2 skipped
  DOCTEST_CHECK(out[0][1].item<float>() == 1);
  DOCTEST_CHECK(out[1][0].item<float>() == 90);   // 10 skipped
  DOCTEST_CHECK(out[1][1].item<float>() == 3);
  DOCTEST_CHECK(out[2][0].item<float>() == 11);   // nothing skipped
  std::int64_t attended = 0;
  for (auto n : model.attended) attended += n;
  DOCTEST_CHECK(attended == 9);  // every token is still attended to
  // A sequence that is all prompt leaves nothing to pool: refused, not a zero vector.
  try {
    engine.embed({{1, 2}, {3, 4}}, {}, {0, 2});
    DOCTEST_FAIL("expected a UsageError");
  } catch (const kalm::UsageError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("sequence 1: its 2 tokens are all prompt") == 0);
  }
}

DOCTEST_TEST_CASE("Engine rejects an empty sequence and handles an empty input") {
  FakeEmbedder model;
  kalm::encode::Engine engine(model, {});
  DOCTEST_CHECK_THROWS_AS(engine.embed({{1}, {}}), kalm::UsageError);
  auto out = engine.embed({});
  DOCTEST_CHECK(out.size(0) == 0);
}

DOCTEST_TEST_CASE("finalize_embeddings: Matryoshka prefix, then L2 normalisation") {
  auto pooled = torch::tensor({{3.0f, 4.0f, 12.0f}, {0.0f, 0.0f, 0.0f}});
  auto full = kalm::encode::finalize_embeddings(pooled, 0, true);
  DOCTEST_CHECK(full[0][2].item<float>() == doctest::Approx(12.0 / 13.0));
  DOCTEST_CHECK(full[1].abs().sum().item<float>() == 0.0f);  // zero stays zero, no NaN
  auto two = kalm::encode::finalize_embeddings(pooled, 2, true);
  DOCTEST_CHECK(two.size(1) == 2);
  DOCTEST_CHECK(two[0][0].item<float>() == doctest::Approx(0.6));
  auto raw = kalm::encode::finalize_embeddings(pooled, 2, false);
  DOCTEST_CHECK(raw[0][1].item<float>() == 4.0f);
  DOCTEST_CHECK_THROWS_AS(kalm::encode::finalize_embeddings(pooled, 4, true), kalm::UsageError);
}

namespace {
// Returns NaN (or infinity) in one column for the rows whose first token is `poison`.
class PoisonedEmbedder : public kalm::encode::BatchEmbedder {
 public:
  explicit PoisonedEmbedder(float bad) : bad_(bad) {}
  torch::Tensor embed(const torch::Tensor& ids, const torch::Tensor&, const torch::Tensor&) override {
    auto out = torch::ones({ids.size(0), 4}, torch::kFloat32);
    auto first = ids.select(1, 0);
    for (std::int64_t r = 0; r < ids.size(0); ++r)
      if (first[r].item<std::int64_t>() == 13) out[r][2] = bad_;
    return out;
  }
  torch::Device device() const override { return torch::kCPU; }

 private:
  float bad_;
};
}  // namespace

DOCTEST_TEST_CASE("Engine: a NaN or infinite output is an error naming the sequence, whatever the batch order") {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    PoisonedEmbedder embedder(bad);
    kalm::encode::EngineOptions options;
    options.batch_tokens = 4;  // several batches, longest first: the bad row is not in the first
    kalm::encode::Engine engine(embedder, options);
    std::vector<std::vector<std::int32_t>> seqs = {{1, 2, 3, 4}, {5, 6}, {13, 1}, {2}};
    std::size_t index = 99;
    std::string msg;
    try {
      engine.embed(seqs);
    } catch (const kalm::encode::NonFiniteEmbedding& e) {
      index = e.index;
      msg = e.what();
    }
    DOCTEST_CHECK(index == 2);
    DOCTEST_CHECK(msg == "sequence 2: the model's output is NaN or infinite");
    // The bad row in the last batch, which is read back after the loop.
    PoisonedEmbedder again(bad);
    kalm::encode::Engine last(again, options);
    index = 99;
    try {
      last.embed({{1, 2, 3, 4}, {5, 6, 7}, {13}});
    } catch (const kalm::encode::NonFiniteEmbedding& e) {
      index = e.index;
    }
    DOCTEST_CHECK(index == 2);
  }
  PoisonedEmbedder clean(0.5f);
  kalm::encode::Engine engine(clean, {});
  auto out = engine.embed({{1, 2}, {3}});
  DOCTEST_CHECK(out.size(0) == 2);
}

#include <ATen/record_function.h>

#include <atomic>

#include "kalm/encode/model_embedder.h"

namespace {
std::atomic<int> scalar_reads{0};
std::unique_ptr<at::ObserverContext> count_scalar_read(const at::RecordFunction& fn) {
  if (std::string_view(fn.name()) == "aten::_local_scalar_dense") ++scalar_reads;
  return nullptr;
}
}  // namespace

DOCTEST_TEST_CASE("Engine over a real model: no scalar read-back per batch (each is a wait for a GPU)") {
  // aten::_local_scalar_dense is every .item(); on a GPU each waits for the
  // device. Counted on the CPU, where the same calls run: the engine's path
  // (input checks, forward, pooling) must make none, so that on a GPU the only
  // wait per batch is the engine's own for the batch before the one queued.
  kalm::encode::EmbedderSettings settings;
  auto loaded = kalm::encode::load_embedder(std::string(KALM_FIXTURES_DIR) + "/models/qwen2_bidir", settings,
                                            /*require_tokenizer=*/false);
  kalm::encode::EngineOptions opt;
  opt.batch_tokens = 8;
  kalm::encode::Engine engine(*loaded.embedder, opt);
  const std::vector<std::vector<std::int32_t>> seqs = {{5, 6, 7, 8}, {9, 10}, {11, 12, 13}, {14}, {15, 16}};
  const auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(count_scalar_read).scopes({at::RecordScope::FUNCTION}));
  scalar_reads = 0;
  const auto out = engine.embed(seqs);
  at::removeCallback(handle);
  DOCTEST_CHECK(engine.stats().batches >= 3);
  DOCTEST_CHECK(out.sizes() == torch::IntArrayRef({5, loaded.dim}));
  DOCTEST_CHECK(scalar_reads.load() == 0);
}
