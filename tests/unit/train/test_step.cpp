// The step's model calls: plan_calls cuts length-sorted rows by a token budget,
// and embed_for_training over many calls gives the same embeddings and
// gradients as embedding every row on its own.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "kalm/error.h"
#include "kalm/io/remove_tree.h"
#include "kalm/model/checkpoint.h"
#include "kalm/model/config.h"
#include "kalm/model/transformer.h"
#include "kalm/train/step.h"
#include "kalm/train/trainer.h"

using namespace kalm::train;

namespace {

kalm::model::ModelConfig tiny_config(std::int64_t layers) {
  auto c = kalm::model::parse_config_file(std::string(KALM_FIXTURES_DIR) + "/train/tiny_qwen2.json");
  c.num_hidden_layers = layers;
  c.layer_types.assign(static_cast<std::size_t>(layers), kalm::model::LayerAttention::Full);
  kalm::model::validate_config(c);
  return c;
}

// Rows of lengths 1..9 in a scrambled order, right-padded to the longest.
TokenBatch scrambled_batch(std::int64_t rows, std::int64_t vocab) {
  TokenBatch b;
  const std::int64_t longest = 9;
  b.ids = torch::zeros({rows, longest}, torch::kLong);
  b.mask = torch::zeros({rows, longest}, torch::kLong);
  for (std::int64_t i = 0; i < rows; ++i) {
    const std::int64_t len = 1 + (i * 7) % longest;
    for (std::int64_t j = 0; j < len; ++j) {
      b.ids[i][j] = (i * 13 + j * 5) % vocab;
      b.mask[i][j] = 1;
    }
    b.tokens += len;
  }
  return b;
}

}  // namespace

DOCTEST_TEST_CASE("plan_calls: length-sorted rows cut greedily by the token budget and the row cap") {
  CallOptions o;
  o.max_tokens = 12;
  // lengths by input row; sorted: 1 (row 3), 2 (row 1), 2 (row 4), 4 (row 0), 5 (row 2), 20 (row 5)
  const std::vector<std::int64_t> lengths{4, 2, 5, 1, 2, 20};
  auto plan = plan_calls(lengths, o);
  DOCTEST_CHECK(plan.order == std::vector<std::int64_t>{3, 1, 4, 0, 2, 5});
  // [1, 2, 2, 4] would be 4 x 4 = 16 > 12: the call closes at 3 x 2 = 6;
  // [4, 5] is 2 x 5 = 10; 20 is alone although over the budget.
  DOCTEST_REQUIRE(plan.calls.size() == 3);
  DOCTEST_CHECK(plan.calls[0].first == 0);
  DOCTEST_CHECK(plan.calls[0].rows == 3);
  DOCTEST_CHECK(plan.calls[0].length == 2);
  DOCTEST_CHECK(plan.calls[1].first == 3);
  DOCTEST_CHECK(plan.calls[1].rows == 2);
  DOCTEST_CHECK(plan.calls[1].length == 5);
  DOCTEST_CHECK(plan.calls[2].first == 5);
  DOCTEST_CHECK(plan.calls[2].rows == 1);
  DOCTEST_CHECK(plan.calls[2].length == 20);
  DOCTEST_CHECK(plan.padded_tokens() == 6 + 10 + 20);
  // Calls with no padding (every row as long as the call) are marked: on a
  // GPU they attend without a key mask.
  DOCTEST_CHECK_FALSE(plan.calls[0].unpadded);  // 1, 2, 2
  DOCTEST_CHECK_FALSE(plan.calls[1].unpadded);  // 4, 5
  DOCTEST_CHECK(plan.calls[2].unpadded);        // 20 alone
  {
    CallOptions wide;
    wide.max_tokens = 16;
    // Texts cut at a maximum length of 8: [3, 3], [8, 8], [8, 8], [8] (3 x 8 > 16).
    auto cut = plan_calls({8, 3, 8, 8, 3, 8, 8}, wide);
    DOCTEST_REQUIRE(cut.calls.size() == 4);
    DOCTEST_CHECK(cut.calls[0].rows == 2);
    DOCTEST_CHECK(cut.calls[1].rows == 2);
    DOCTEST_CHECK(cut.calls[3].rows == 1);
    for (const auto& call : cut.calls) DOCTEST_CHECK(call.unpadded);
    wide.max_tokens = 100;  // [3, 3, 8, 8, 8, 8, 8]: padded
    DOCTEST_CHECK_FALSE(plan_calls({8, 3, 8, 8, 3, 8, 8}, wide).calls[0].unpadded);
  }
  // The default budget takes the whole (small) step in one call; a row cap splits it.
  plan = plan_calls(lengths, CallOptions{});
  DOCTEST_CHECK(plan.calls.size() == 1);
  DOCTEST_CHECK(plan.padded_tokens() == 6 * 20);
  o.max_tokens = 1000;
  o.max_rows = 4;
  plan = plan_calls(lengths, o);
  DOCTEST_REQUIRE(plan.calls.size() == 2);
  DOCTEST_CHECK(plan.calls[0].rows == 4);
  DOCTEST_CHECK(plan.calls[1].rows == 2);
  DOCTEST_CHECK(plan.calls[1].length == 20);
  // Bad limits are usage errors.
  o.max_rows = 0;
  DOCTEST_CHECK_THROWS_AS(plan_calls(lengths, o), kalm::UsageError);
  o.max_rows.reset();
  o.max_tokens = 0;
  DOCTEST_CHECK_THROWS_AS(plan_calls(lengths, o), kalm::UsageError);
}

DOCTEST_TEST_CASE("embed_for_training: many calls equal row-by-row embedding, values and gradients") {
  for (std::int64_t layers : {0, 1}) {
    DOCTEST_SUBCASE((std::to_string(layers) + " layers").c_str()) {
      auto config = tiny_config(layers);
      kalm::model::Encoder encoder(config, kalm::model::AttentionMode::Bidirectional);
      encoder->init_parameters(7);
      const std::int64_t rows = 197;
      const auto batch = scrambled_batch(rows, config.vocab_size);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(5);  // fixed weights: the tolerance below is measured
      const auto weights = at::randn({rows, config.hidden_size}, gen);
      CallOptions calls;
      calls.max_tokens = 100;  // lengths 1-9: calls of 11 to 100 rows
      DOCTEST_REQUIRE(plan_calls(std::vector<std::int64_t>(rows, 9), calls).calls.size() > 10);

      const auto packed = embed_for_training(*encoder, batch, kalm::model::Pooling::Mean, calls);
      DOCTEST_REQUIRE(packed.sizes() == torch::IntArrayRef({rows, config.hidden_size}));
      (packed * weights).sum().backward();
      const auto grad_packed = encoder->embed_tokens->weight.grad().clone();
      encoder->zero_grad();

      std::vector<torch::Tensor> single;
      for (std::int64_t i = 0; i < rows; ++i) {
        const std::int64_t len = batch.mask[i].sum().item<std::int64_t>();
        const auto ids = batch.ids.slice(0, i, i + 1).slice(1, 0, len);
        const auto mask = batch.mask.slice(0, i, i + 1).slice(1, 0, len);
        single.push_back(kalm::model::pool(encoder->forward(ids, mask), mask, kalm::model::Pooling::Mean));
      }
      const auto reference = torch::cat(single, 0);
      (reference * weights).sum().backward();
      const auto grad_reference = encoder->embed_tokens->weight.grad().clone();

      DOCTEST_CHECK((packed - reference).abs().max().item<double>() < 1e-5);
      // Float32 sums in other orders: within 1e-6 of the largest gradient entry
      // (measured: 1.3e-7 to 2.6e-7 relative).
      const double grad_scale = grad_reference.abs().max().item<double>();
      const double grad_diff = (grad_packed - grad_reference).abs().max().item<double>();
      DOCTEST_INFO("gradient difference " << grad_diff << " of " << grad_scale);
      DOCTEST_CHECK(grad_diff <= 1e-6 * grad_scale);
      DOCTEST_CHECK(grad_scale > 0);
    }
  }
}

DOCTEST_TEST_CASE("embed_for_training: bad input is refused on the host, naming the row") {
  auto config = tiny_config(0);
  kalm::model::Encoder encoder(config, kalm::model::AttentionMode::Bidirectional);
  encoder->init_parameters(1);
  auto batch = scrambled_batch(70, config.vocab_size);
  batch.ids[3][0] = config.vocab_size;  // row 3 has at least one token
  DOCTEST_CHECK_THROWS_WITH_AS(embed_for_training(*encoder, batch, kalm::model::Pooling::Mean),
                               ("model input: token id " + std::to_string(config.vocab_size) +
                                " at sequence 3, position 0 is outside the vocabulary [0, " +
                                std::to_string(config.vocab_size) + ")").c_str(),
                               kalm::ModelError);
  batch = scrambled_batch(5, config.vocab_size);
  batch.mask[2][8] = 1;  // row 2 is shorter than 9: a token after padding
  DOCTEST_CHECK_THROWS_AS(embed_for_training(*encoder, batch, kalm::model::Pooling::Mean), kalm::UsageError);
  batch = scrambled_batch(5, config.vocab_size);
  batch.mask[4].zero_();  // a row without tokens
  DOCTEST_CHECK_THROWS_WITH_AS(embed_for_training(*encoder, batch, kalm::model::Pooling::Mean),
                               "model input: sequence 4 of the batch has no tokens", kalm::UsageError);
}

DOCTEST_TEST_CASE("embed_for_training: pool_from leaves leading tokens out of the pooling, not out of attention") {
  for (auto pooling : {kalm::model::Pooling::Mean, kalm::model::Pooling::LastToken}) {
    DOCTEST_SUBCASE(std::string(kalm::model::pooling_name(pooling)).c_str()) {
      auto config = tiny_config(1);
      kalm::model::Encoder encoder(config, kalm::model::AttentionMode::Causal);
      encoder->init_parameters(3);
      const std::int64_t rows = 23;
      auto batch = scrambled_batch(rows, config.vocab_size);
      for (std::int64_t i = 0; i < rows; ++i) {
        const std::int64_t len = batch.mask[i].sum().item<std::int64_t>();
        batch.pool_from.push_back(i % 3 == 0 ? 0 : (i % len));  // 0 .. len - 1
      }
      CallOptions calls;
      calls.max_tokens = 40;
      const auto packed = embed_for_training(*encoder, batch, pooling, calls);
      for (std::int64_t i = 0; i < rows; ++i) {
        const std::int64_t len = batch.mask[i].sum().item<std::int64_t>();
        const auto ids = batch.ids.slice(0, i, i + 1).slice(1, 0, len);
        const auto mask = batch.mask.slice(0, i, i + 1).slice(1, 0, len);
        auto pool_mask = mask.clone();
        pool_mask.slice(1, 0, batch.pool_from[static_cast<std::size_t>(i)]).zero_();
        const auto expected = kalm::model::pool(encoder->forward(ids, mask), pool_mask, pooling);
        DOCTEST_CHECK((packed[i] - expected[0]).abs().max().item<double>() < 1e-5);
      }
      // A row whose tokens are all prompt has nothing to pool.
      batch.pool_from[5] = batch.mask[5].sum().item<std::int64_t>();
      DOCTEST_CHECK_THROWS_AS(embed_for_training(*encoder, batch, pooling, calls), kalm::UsageError);
    }
  }
  // Mean pooling without the first tokens differs from pooling them.
  auto config = tiny_config(0);
  kalm::model::Encoder encoder(config, kalm::model::AttentionMode::Bidirectional);
  encoder->init_parameters(3);
  auto batch = scrambled_batch(4, config.vocab_size);  // lengths 1, 8, 6, 4
  const auto all = embed_for_training(*encoder, batch, kalm::model::Pooling::Mean);
  batch.pool_from = {0, 2, 0, 0};
  const auto part = embed_for_training(*encoder, batch, kalm::model::Pooling::Mean);
  DOCTEST_CHECK(torch::equal(all[0], part[0]));
  DOCTEST_CHECK((all[1] - part[1]).abs().max().item<double>() > 1e-3);
  const auto sliced = slice_rows(batch, 1, 3);
  DOCTEST_CHECK(sliced.pool_from == std::vector<std::int64_t>{2, 0});
}

DOCTEST_TEST_CASE("slice_rows: rows and lengths of a range, trimmed to its longest row, on the host") {
  const auto batch = scrambled_batch(6, 50);  // lengths 1, 8, 6, 4, 2, 9
  const auto lengths_in = std::vector<std::int64_t>{1, 8, 6, 4, 2, 9};
  const auto part = slice_rows(batch, 2, 5);
  DOCTEST_CHECK(part.lengths == std::vector<std::int64_t>(lengths_in.begin() + 2, lengths_in.begin() + 5));
  DOCTEST_CHECK(part.tokens == 12);
  DOCTEST_CHECK(part.ids.sizes() == torch::IntArrayRef({3, 6}));
  DOCTEST_CHECK(torch::equal(part.ids, batch.ids.slice(0, 2, 5).slice(1, 0, 6)));
  DOCTEST_CHECK(torch::equal(part.mask, batch.mask.slice(0, 2, 5).slice(1, 0, 6)));
}

DOCTEST_TEST_CASE("--init-embeddings: a deeper model starts from a trained model's token embeddings and norm") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("kalm_init_embeddings_" + std::to_string(::getpid()));
  kalm::io::remove_tree_nothrow(std::filesystem::path(dir).string());
  fs::create_directories(dir);
  const std::string fixtures = std::string(KALM_FIXTURES_DIR) + "/train";
  TrainOptions donor;
  donor.data.inputs = {fixtures + "/toy"};
  donor.init_config = fixtures + "/tiny_qwen2.json";  // 1 layer
  donor.train_tokenizer = 48;
  donor.tokenizer_model = "unigram";
  donor.output = (dir / "donor").string();
  donor.batching.batch_size = 8;
  donor.query_max_length = donor.passage_max_length = 24;
  donor.learning_rate = 2e-3;
  donor.max_steps = 3;
  donor.quiet = true;
  run_training(donor);
  const auto trained = kalm::model::load_model(donor.output).encoder;

  // Two layers, same vocabulary and width; learning rate 0 keeps the start.
  auto config_text = [&] {
    std::ifstream in(fixtures + "/tiny_qwen2.json");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    const auto at = s.find("\"num_hidden_layers\": 1");
    DOCTEST_REQUIRE(at != std::string::npos);
    s.replace(at, 22, "\"num_hidden_layers\": 2");
    return s;
  }();
  {
    std::ofstream out(dir / "deep.json");
    out << config_text;
  }
  TrainOptions deep = donor;
  deep.init_config = (dir / "deep.json").string();
  deep.train_tokenizer.reset();
  deep.init_embeddings = donor.output;
  deep.output = (dir / "deep").string();
  deep.learning_rate = 0.0;
  deep.max_steps = 1;
  run_training(deep);
  const auto seeded = kalm::model::load_model(deep.output).encoder;
  DOCTEST_CHECK(seeded->config().num_hidden_layers == 2);
  DOCTEST_CHECK(torch::equal(seeded->embed_tokens->weight, trained->embed_tokens->weight));
  DOCTEST_CHECK(torch::equal(seeded->norm->weight, trained->norm->weight));
  DOCTEST_CHECK(fs::exists(dir / "deep" / "tokenizer.model"));

  // A different width is refused, naming the donor.
  TrainOptions wrong = deep;
  wrong.output = (dir / "wrong").string();
  {
    std::string s = config_text;
    const auto at = s.find("\"hidden_size\": 32");
    DOCTEST_REQUIRE(at != std::string::npos);
    s.replace(at, 17, "\"hidden_size\": 16");
    std::ofstream out(dir / "wrong.json");
    out << s;
  }
  wrong.init_config = (dir / "wrong.json").string();
  DOCTEST_CHECK_THROWS_AS(run_training(wrong), kalm::ModelError);
  // With --init it makes no sense.
  TrainOptions with_init = deep;
  with_init.init_config.clear();
  with_init.init = donor.output;
  DOCTEST_CHECK_THROWS_AS(run_training(with_init), kalm::UsageError);
  kalm::io::remove_tree_nothrow(std::filesystem::path(dir).string());
}

DOCTEST_TEST_CASE("a 0-layer model is the final norm of the token embeddings") {
  auto config = tiny_config(0);
  kalm::model::Encoder encoder(config, kalm::model::AttentionMode::Bidirectional);
  encoder->init_parameters(5);
  const auto batch = scrambled_batch(6, config.vocab_size);
  const auto out = encoder->forward(batch.ids, batch.mask);
  const auto ids = batch.ids.masked_fill(batch.mask.eq(0), 0);
  const auto x = encoder->embed_tokens->weight.index_select(0, ids.reshape({-1})).view({6, 9, config.hidden_size});
  const auto expected = encoder->norm->weight * (x * torch::rsqrt(x.pow(2).mean(-1, true) + config.rms_norm_eps));
  DOCTEST_CHECK((out - expected).abs().max().item<double>() < 1e-6);
}

DOCTEST_TEST_CASE("clip_gradients: the global norm, scaled only above the limit, as PyTorch's clip_grad_norm_") {
  auto a = torch::zeros({2}, torch::requires_grad());
  auto b = torch::zeros({1}, torch::requires_grad());
  auto no_grad = torch::zeros({3}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  // No limit: the norm (5), gradients untouched.
  auto norm = kalm::train::clip_gradients({a, b, no_grad}, std::nullopt);
  DOCTEST_CHECK(norm.item<double>() == doctest::Approx(5.0));
  DOCTEST_CHECK(a.grad()[0].item<float>() == 3.0f);
  // A limit above the norm: untouched.
  norm = kalm::train::clip_gradients({a, b}, 10.0);
  DOCTEST_CHECK(norm.item<double>() == doctest::Approx(5.0));
  DOCTEST_CHECK(b.grad()[0].item<float>() == 4.0f);
  // Below: scaled by 1 / (5 + 1e-6), as torch.nn.utils.clip_grad_norm_.
  norm = kalm::train::clip_gradients({a, b}, 1.0);
  DOCTEST_CHECK(norm.item<double>() == doctest::Approx(5.0));
  DOCTEST_CHECK(a.grad()[0].item<float>() == doctest::Approx(3.0 / (5.0 + 1e-6)).epsilon(1e-6));
  DOCTEST_CHECK(b.grad()[0].item<float>() == doctest::Approx(4.0 / (5.0 + 1e-6)).epsilon(1e-6));
  DOCTEST_CHECK(kalm::train::clip_gradients({no_grad}, 1.0).item<double>() == 0.0);
}
