// The training loop on a tiny Qwen2 (hidden 32, 1 layer) with a SentencePiece
// tokenizer trained in the test: loss goes down, GradCache equals a plain
// backward, resume is bit-exact, signals checkpoint, export reloads, soup averages;
// focal/mixing detach switches and an on-the-fly distillation teacher.
#include <doctest/doctest.h>
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <ATen/CPUGeneratorImpl.h>
#include <filesystem>
#include <fstream>
#include <regex>

#include "kalm/core/runtime.h"
#include "kalm/error.h"
#include "kalm/io/remove_tree.h"
#include "kalm/model/checkpoint.h"
#include "kalm/model/sentence_transformers.h"
#include "kalm/text/tokenizer.h"
#include "kalm/train/soup.h"
#include "kalm/train/step.h"
#include "kalm/train/teacher.h"
#include "kalm/train/trainer.h"

namespace fs = std::filesystem;
using namespace kalm::train;

namespace {

const std::string kFixtures = std::string(KALM_FIXTURES_DIR) + "/train";

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("kalm_train_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    kalm::io::remove_tree_nothrow(std::filesystem::path(path).string());
    fs::create_directories(path);
  }
  ~TempDir() { kalm::io::remove_tree_nothrow(std::filesystem::path(path).string()); }
  std::string sub(const std::string& name) const { return (path / name).string(); }
};

TrainOptions tiny_options(const std::string& output) {
  TrainOptions o;
  o.data.inputs = {kFixtures + "/toy"};
  o.data.instructions_file = kFixtures + "/instructions.json";
  o.init_config = kFixtures + "/tiny_qwen2.json";
  o.train_tokenizer = 48;
  o.tokenizer_model = "unigram";  // small enough for the tests; bpe needs 258+
  o.output = output;
  o.batching.batch_size = 8;
  o.query_max_length = 24;
  o.passage_max_length = 24;
  o.learning_rate = 2e-3;
  o.warmup_ratio = 0.0;
  o.schedule = "constant";
  o.quiet = true;
  o.seed = 3;
  return o;
}

std::map<std::string, torch::Tensor> weights_of(const std::string& dir) {
  auto m = kalm::model::load_model(dir);
  std::map<std::string, torch::Tensor> out;
  for (auto& [k, v] : m.encoder->hf_tensors()) out[k] = v.clone();
  return out;
}

bool bit_equal(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end() || !torch::equal(v, it->second)) return false;
  }
  return true;
}

}  // namespace

DOCTEST_TEST_CASE("learning-rate schedule follows HF's lambdas") {
  DOCTEST_CHECK(learning_rate_at(0, 10, 2, 1.0, Schedule::kLinear) == 0.0);
  DOCTEST_CHECK(learning_rate_at(1, 10, 2, 1.0, Schedule::kLinear) == doctest::Approx(0.5));
  DOCTEST_CHECK(learning_rate_at(2, 10, 2, 1.0, Schedule::kLinear) == doctest::Approx(1.0));
  DOCTEST_CHECK(learning_rate_at(6, 10, 2, 1.0, Schedule::kLinear) == doctest::Approx(0.5));
  DOCTEST_CHECK(learning_rate_at(10, 10, 2, 1.0, Schedule::kLinear) == doctest::Approx(0.0));
  DOCTEST_CHECK(learning_rate_at(6, 10, 2, 2.0, Schedule::kCosine) == doctest::Approx(1.0));
  DOCTEST_CHECK(learning_rate_at(4, 10, 2, 2.0, Schedule::kCosine) == doctest::Approx(1.0 + std::cos(M_PI / 4)));
  DOCTEST_CHECK(learning_rate_at(9, 10, 2, 3.0, Schedule::kConstant) == 3.0);
  DOCTEST_CHECK(learning_rate_at(0, 10, 0, 3.0, Schedule::kLinear) == 3.0);
  DOCTEST_CHECK(parse_schedule("cosine") == Schedule::kCosine);
  DOCTEST_CHECK_THROWS_AS(parse_schedule("step"), kalm::UsageError);
}

DOCTEST_TEST_CASE("GradCache gives the gradients of a plain backward") {
  TempDir t;
  kalm::text::SentencePieceTrainOptions so;
  so.vocab_size = 48;
  DataOptions dopt;
  dopt.inputs = {kFixtures + "/toy"};
  Dataset data = load_dataset(dopt);
  std::vector<std::string> texts;
  for (const auto& ex : data.examples) {
    texts.push_back(ex.query);
    texts.insert(texts.end(), ex.pos.begin(), ex.pos.end());
  }
  kalm::text::train_sentencepiece(texts, so, t.sub("tok.model"));
  auto tok = kalm::text::load_sentencepiece(t.sub("tok.model"));

  auto config = kalm::model::parse_config_file(kFixtures + "/tiny_qwen2.json");
  kalm::model::Encoder enc(config, kalm::model::AttentionMode::Bidirectional);
  enc->init_parameters(11);
  auto rng = batch_rng(5, 0, 0);
  std::vector<std::size_t> indices{8, 9, 10, 11, 24, 25, 0, 1};  // retrieval, sts, classification
  auto batch = build_batch(data, indices, 3, false, rng, *tok, 24, 24);
  DOCTEST_REQUIRE(batch.passages.ids.size(0) == 32);
  DOCTEST_CHECK(batch.info.group_size == 4);
  DOCTEST_CHECK(batch.info.in_batch[6].item<bool>() == false);  // classification: own group only

  kalm::loss::LossOptions lo;
  lo.matryoshka_dims = {32, 16};
  lo.matryoshka_weights = {1.0, 0.5};
  // chunk: GradCache with at most `chunk` texts per call; unset = plain backward.
  auto cache_calls = [](std::optional<std::int64_t> chunk, std::int64_t max_tokens = kDefaultCallTokensCpu) {
    CallOptions calls;
    calls.grad_cache = chunk.has_value();
    calls.max_rows = chunk;
    calls.max_tokens = max_tokens;
    return calls;
  };
  auto grads_with = [&](const CallOptions& calls, bool bf16) {
    for (auto& p : enc->parameters()) p.mutable_grad() = torch::Tensor();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(77);
    auto out = forward_backward(*enc, batch, kalm::model::Pooling::Mean, lo, calls, gen, 0.5, bf16);
    std::vector<torch::Tensor> g;
    for (auto& p : enc->parameters()) g.push_back(p.grad().clone());
    return std::make_pair(out.total.item<double>(), g);
  };
  auto grads = [&](std::optional<std::int64_t> chunk, bool bf16 = false) {
    return grads_with(cache_calls(chunk), bf16);
  };
  auto [plain_loss, plain] = grads(std::nullopt);
  for (std::int64_t chunk : {1, 3, 100}) {
    DOCTEST_INFO("chunk " << chunk);
    auto [loss, cached] = grads(chunk);
    DOCTEST_CHECK(loss == doctest::Approx(plain_loss).epsilon(1e-6));
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < plain.size(); ++i) {
      worst = std::max(worst, (plain[i] - cached[i]).abs().max().item<double>());
      scale = std::max(scale, plain[i].abs().max().item<double>());
    }
    DOCTEST_CHECK(scale > 1e-4);  // the gradients are not trivially zero
    DOCTEST_INFO("worst " << worst << " scale " << scale);
    // One chunk spanning the batch runs the very same kernels: equal bits. Smaller
    // chunks pad and multiply in other shapes, so float32 sums round differently:
    // within 1e-5 of the largest gradient entry (measured: about 2e-6).
    if (chunk == 100)
      DOCTEST_CHECK(worst == 0.0);
    else
      DOCTEST_CHECK(worst <= 1e-5 * scale);
  }
  DOCTEST_CHECK_THROWS_AS(grads(0), kalm::UsageError);
  // Chunks sized in tokens only (--grad-cache --call-tokens 64: calls of a few
  // texts each), and plain steps cut into many small calls: the same loss and
  // gradients up to float rounding.
  for (const auto& calls : {cache_calls(std::nullopt, 64), cache_calls(std::int64_t{1000}, 64)}) {
    CallOptions c = calls;
    c.grad_cache = true;
    for (bool cache : {true, false}) {
      c.grad_cache = cache;
      DOCTEST_INFO("grad cache " << cache << ", 64 tokens per call");
      auto [loss, small] = grads_with(c, false);
      DOCTEST_CHECK(loss == doctest::Approx(plain_loss).epsilon(1e-6));
      double worst = 0, scale = 0;
      for (std::size_t i = 0; i < plain.size(); ++i) {
        worst = std::max(worst, (plain[i] - small[i]).abs().max().item<double>());
        scale = std::max(scale, plain[i].abs().max().item<double>());
      }
      DOCTEST_CHECK(worst <= 1e-5 * scale);
    }
  }
  {
    CallOptions bad;
    bad.max_tokens = 0;
    DOCTEST_CHECK_THROWS_AS(grads_with(bad, false), kalm::UsageError);
  }

  // bf16 autocast: the same loss and gradients to bfloat16 precision, weights untouched
  // in float32, and autocast off again afterwards.
  auto [bf_loss, bf] = grads(std::nullopt, true);
  auto [bf_cached_loss, bf_cached] = grads(4, true);
  // autocast is off again: a float32 product stays float32
  DOCTEST_CHECK((torch::mm(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type() == torch::kFloat));
  DOCTEST_CHECK(bf_loss == doctest::Approx(plain_loss).epsilon(2e-2));
  DOCTEST_CHECK(bf_cached_loss == doctest::Approx(bf_loss).epsilon(1e-2));
  double num = 0, den = 0;
  for (std::size_t i = 0; i < plain.size(); ++i) {
    DOCTEST_CHECK((bf[i].scalar_type() == torch::kFloat));
    num += (bf[i] - plain[i]).pow(2).sum().item<double>();
    den += plain[i].pow(2).sum().item<double>();
  }
  DOCTEST_CHECK(std::sqrt(num / den) < 0.1);  // relative L2 error of the whole gradient
  DOCTEST_CHECK(std::sqrt(num / den) > 0.0);  // bf16 really ran

  // On a GPU (GPU machines only): the same loss and gradients from a copy of
  // the model on CUDA, fed the same CPU batch, plainly and with GradCache.
  if (torch::cuda::is_available()) {
    kalm::model::Encoder gpu(config, kalm::model::AttentionMode::Bidirectional);
    gpu->init_parameters(11);
    gpu->to(torch::Device(torch::kCUDA));
    for (std::optional<std::int64_t> chunk : {std::optional<std::int64_t>(), std::optional<std::int64_t>(3)}) {
      for (auto& p : gpu->parameters()) p.mutable_grad() = torch::Tensor();
      auto gen = at::make_generator<at::CPUGeneratorImpl>(77);
      auto out = forward_backward(*gpu, batch, kalm::model::Pooling::Mean, lo, cache_calls(chunk), gen, 0.5, false);
      DOCTEST_CHECK(out.total.item<double>() == doctest::Approx(plain_loss).epsilon(1e-5));
      const auto params = gpu->parameters();
      double worst = 0, scale = 0;
      for (std::size_t i = 0; i < plain.size(); ++i) {
        DOCTEST_CHECK(params[i].grad().is_cuda());
        worst = std::max(worst, (plain[i] - params[i].grad().cpu()).abs().max().item<double>());
        scale = std::max(scale, plain[i].abs().max().item<double>());
      }
      DOCTEST_CHECK(worst <= 1e-4 * scale);
    }
  }
}

DOCTEST_TEST_CASE("a tiny model trains: the loss decreases on a fixed toy set") {
  TempDir t;
  auto o = tiny_options(t.sub("out"));
  o.stage = Stage::kPretrain;  // in-batch only: every step sees the same full batch
  o.data.inputs = {kFixtures + "/toy/retrieval.jsonl", kFixtures + "/toy/sts.jsonl"};
  o.batching.batch_size = 24;
  o.max_steps = 12;
  o.metrics = t.sub("metrics.jsonl");
  auto r = run_training(o);
  DOCTEST_REQUIRE(r.losses.size() == 12);
  DOCTEST_CHECK(r.steps == 12);
  DOCTEST_CHECK(!r.stopped);
  DOCTEST_CHECK(r.losses.back() < 0.7 * r.losses.front());
  // Metrics: one line per step with the loss components.
  std::ifstream in(o.metrics);
  std::string line, last;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    last = line;
  }
  DOCTEST_CHECK(lines == 12);
  DOCTEST_CHECK(last.rfind("{\"step\": 12, ", 0) == 0);
  for (const char* key : {"\"loss\"", "\"infonce\"", "\"focal\"", "\"lr\"", "\"grad_norm\"", "\"tokens_per_s\""})
    DOCTEST_CHECK(last.find(key) != std::string::npos);

  // The export: a model directory that load_model and the sentence-transformers reader accept,
  // giving the trained encoder's embeddings exactly.
  auto loaded = kalm::model::load_model(o.output);
  auto st = kalm::model::read_sentence_transformers(o.output);
  DOCTEST_CHECK(st.pooling == kalm::model::Pooling::Mean);
  DOCTEST_CHECK(st.normalize);
  DOCTEST_CHECK(st.prompts.at("retrieval") == "Instruct: Given a question, retrieve the sentence that answers it \n Query: ");
  DOCTEST_CHECK(st.prompts.at("sts") == "Instruct: Retrieve semantically similar text \n Query: ");
  DOCTEST_CHECK(fs::exists(fs::path(o.output) / "tokenizer.model"));
  DOCTEST_CHECK(fs::exists(fs::path(o.output) / "tokenizer_config.json"));
  DOCTEST_CHECK(!fs::exists(fs::path(o.output) / ".kalm-tokenizer"));
  auto tok = kalm::text::load_tokenizer(o.output);
  DOCTEST_CHECK(tok->pad_id() == tok->unk_id());
  DOCTEST_CHECK(tok->num_special_tokens_added() == 0);
  auto batch = tokenize_batch(*tok, {"the cat sleeps", "a whale dives in the sea"}, 24);
  auto a = loaded.encoder->embed(batch.ids, batch.mask, kalm::model::Pooling::Mean);
  auto b = r.encoder->embed(batch.ids, batch.mask, kalm::model::Pooling::Mean);
  DOCTEST_CHECK(torch::equal(a, b));
}

DOCTEST_TEST_CASE("resume: stopped at step k and resumed ends bit-identical to an uninterrupted run") {
  TempDir t;
  auto full = tiny_options(t.sub("full"));
  full.stage = Stage::kFinetune;  // hard negatives, focal, pair-wise mixing (generator state)
  full.num_negatives = 3;
  full.batching.task_homogeneous = true;
  full.batching.homogeneous_ratio = 0.75;
  full.grad_accumulation = 2;
  full.epochs = 2;  // 4 batches of 8 per epoch -> 2 steps per epoch -> 4 steps, crossing an epoch
  full.schedule = "linear";
  full.warmup_steps = 1;
  full.learning_rate = 1e-3;
  full.metrics = t.sub("full.jsonl");
  auto whole = run_training(full);
  DOCTEST_REQUIRE(whole.steps == 4);

  auto part = full;
  part.output = t.sub("part");
  part.metrics = t.sub("part.jsonl");
  part.stop_at_step = 3;
  auto first = run_training(part);
  DOCTEST_CHECK(first.stopped);
  DOCTEST_CHECK(first.signal == 0);
  DOCTEST_CHECK(first.steps == 3);
  DOCTEST_CHECK(fs::exists(fs::path(part.output) / "checkpoint-3" / "optimizer.safetensors"));
  DOCTEST_CHECK(!fs::exists(fs::path(part.output) / "model.safetensors"));  // no final export yet

  part.stop_at_step.reset();
  part.resume = true;
  auto second = run_training(part);
  DOCTEST_CHECK(second.steps == 4);
  DOCTEST_CHECK(second.losses.size() == 1);
  DOCTEST_CHECK(second.losses[0] == whole.losses[3]);
  DOCTEST_CHECK(bit_equal(weights_of(full.output), weights_of(part.output)));
  // The metrics log reads as one run's.
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::string s, line;
    while (std::getline(in, line)) s += line.substr(0, line.find("\"tokens_per_s\"")) + "\n";
    return s;
  };
  DOCTEST_CHECK(slurp(full.metrics) == slurp(part.metrics));

  // Batches built ahead on a background thread (--prefetch on, the default on
  // GPUs) are the same batches: the same bytes as the run without it, across
  // the epoch boundary and the accumulation.
  auto ahead = full;
  ahead.output = t.sub("ahead");
  ahead.metrics = t.sub("ahead.jsonl");
  ahead.prefetch = "on";
  auto prefetched = run_training(ahead);
  DOCTEST_CHECK(prefetched.losses == whole.losses);
  DOCTEST_CHECK(bit_equal(weights_of(full.output), weights_of(ahead.output)));
  DOCTEST_CHECK(slurp(full.metrics) == slurp(ahead.metrics));

  // A resumed run must repeat the original settings.
  auto other = part;
  other.batching.batch_size = 4;
  DOCTEST_CHECK_THROWS_AS(run_training(other), kalm::UsageError);
}

DOCTEST_TEST_CASE("SIGTERM: checkpoint at the next step boundary, then stop with the signal") {
  TempDir t;
  auto o = tiny_options(t.sub("out"));
  o.stage = Stage::kPretrain;
  o.data.inputs = {kFixtures + "/toy/retrieval.jsonl"};
  o.max_steps = 50;
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  ::raise(SIGTERM);  // pending until the loop polls it
  auto r = run_training(o);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  DOCTEST_CHECK(r.signal == SIGTERM);
  DOCTEST_CHECK(r.stopped);
  DOCTEST_CHECK(r.steps == 1);
  DOCTEST_CHECK(fs::exists(fs::path(o.output) / "checkpoint-1" / "trainer_state.json"));
  DOCTEST_CHECK(!fs::exists(fs::path(o.output) / "model.safetensors"));
}

DOCTEST_TEST_CASE("model soup: weighted average, checked shapes and configs") {
  TempDir t;
  auto o = tiny_options(t.sub("a"));
  o.stage = Stage::kPretrain;
  o.data.inputs = {kFixtures + "/toy/retrieval.jsonl"};
  o.max_steps = 5;
  o.save_steps = 1;
  o.keep_checkpoints = 2;
  run_training(o);
  // Checkpoints 1..4 were written (5 is the final export); the newest 2 remain.
  DOCTEST_CHECK(!fs::exists(fs::path(o.output) / "checkpoint-2"));
  DOCTEST_CHECK(fs::exists(fs::path(o.output) / "checkpoint-3"));
  DOCTEST_CHECK(fs::exists(fs::path(o.output) / "checkpoint-4"));
  o.max_steps = 1;
  o.save_steps = 0;
  o.output = t.sub("b");
  o.seed = 4;
  o.init_config.clear();
  o.init = t.sub("a");
  o.train_tokenizer.reset();
  run_training(o);

  SoupOptions s;
  s.inputs = {t.sub("a"), t.sub("b")};
  s.weights = {3, 1};
  s.output = t.sub("soup");
  make_soup(s);
  auto wa = weights_of(t.sub("a")), wb = weights_of(t.sub("b")), ws = weights_of(t.sub("soup"));
  for (const auto& [k, v] : ws) {
    auto expect = (wa[k].to(torch::kDouble) * 0.75 + wb[k].to(torch::kDouble) * 0.25).to(torch::kFloat);
    DOCTEST_CHECK(torch::equal(v, expect));
  }
  DOCTEST_CHECK(fs::exists(fs::path(s.output) / "tokenizer.model"));
  DOCTEST_CHECK(fs::exists(fs::path(s.output) / "1_Pooling" / "config.json"));

  s.weights = {1};
  DOCTEST_CHECK_THROWS_AS(make_soup(s), kalm::UsageError);
  s.weights = {0, 0};
  DOCTEST_CHECK_THROWS_AS(make_soup(s), kalm::UsageError);
  s.weights.clear();
  s.inputs = {t.sub("a"), std::string(KALM_FIXTURES_DIR) + "/models/qwen2_bidir"};
  DOCTEST_CHECK_THROWS_AS(make_soup(s), kalm::ModelError);
  // A checkpoint that leaves the instruction out of the pooling embeds queries
  // otherwise: refused, naming the setting.
  fs::copy(t.sub("b"), t.sub("c"), fs::copy_options::recursive);
  const std::string pooling = (fs::path(t.sub("c")) / "1_Pooling" / "config.json").string();
  std::string text;
  {
    std::ifstream in(pooling);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto at = text.find("\"include_prompt\": true");
  DOCTEST_REQUIRE(at != std::string::npos);
  text.replace(at, 22, "\"include_prompt\": false");
  std::ofstream(pooling) << text;
  s.inputs = {t.sub("a"), t.sub("c")};
  s.output = t.sub("soup2");
  DOCTEST_CHECK_THROWS_WITH_AS(make_soup(s), doctest::Contains("include_prompt false"), kalm::ModelError);
  DOCTEST_CHECK(!fs::exists(fs::path(s.output) / "config.json"));
}

DOCTEST_TEST_CASE("bad options are usage errors") {
  TempDir t;
  auto o = tiny_options(t.sub("out"));
  auto bad = o;
  bad.output.clear();
  DOCTEST_CHECK_THROWS_AS(run_training(bad), kalm::UsageError);
  bad = o;
  bad.init = "somewhere";
  DOCTEST_CHECK_THROWS_AS(run_training(bad), kalm::UsageError);  // --init and --init-config
  bad = o;
  bad.train_tokenizer.reset();
  DOCTEST_CHECK_THROWS_AS(run_training(bad), kalm::UsageError);  // no tokenizer
  bad = o;
  bad.grad_cache_chunk = 0;
  DOCTEST_CHECK_THROWS_AS(run_training(bad), kalm::UsageError);
  bad = o;
  bad.call_tokens = 0;
  DOCTEST_CHECK_THROWS_WITH_AS(run_training(bad), "--call-tokens must be at least 1", kalm::UsageError);
  bad = o;
  bad.prefetch = "sometimes";
  DOCTEST_CHECK_THROWS_WITH_AS(run_training(bad), "--prefetch must be auto, on or off, got 'sometimes'",
                               kalm::UsageError);
  bad = o;
  bad.loss.distill_only = true;
  DOCTEST_CHECK_THROWS_AS(run_training(bad), kalm::UsageError);
  bad = o;
  bad.stage = Stage::kDistill;  // every toy record has scores: fine; a record without is a FormatError
  bad.max_steps = 1;
  bad.data.inputs = {kFixtures + "/toy/sts.jsonl"};
  bad.data.instructions_file.clear();
  bad.num_negatives = 1;
  DOCTEST_CHECK(run_training(bad).steps == 1);
  DOCTEST_CHECK_THROWS_AS(parse_stage("warmup"), kalm::UsageError);
}

namespace {

// `path` rewritten without its pos_scores / neg_scores fields (a group as it
// is before any teacher scored it).
std::string strip_scores(const std::string& path, const std::string& out) {
  std::ifstream in(path);
  std::ofstream o(out);
  std::string line;
  const std::regex scores(R"(, "(pos|neg)_scores": \[[^\]]*\])");
  while (std::getline(in, line)) o << std::regex_replace(line, scores, "") << "\n";
  return out;
}

}  // namespace

DOCTEST_TEST_CASE("focal_detach and mix_detach reach the loss: they change the weights only where the loss says") {
  TempDir t;
  auto base = tiny_options("");
  base.stage = Stage::kFinetune;
  base.num_negatives = 3;  // mixing needs M >= 2
  base.max_steps = 2;      // the second step sees weights the first step's gradient made
  base.data.inputs = {kFixtures + "/toy/retrieval.jsonl", kFixtures + "/toy/sts.jsonl"};
  int n = 0;
  auto train = [&](double gamma, kalm::loss::MixMode mix, bool focal_detach, bool mix_detach) {
    auto o = base;
    o.output = t.sub("run" + std::to_string(n++));
    o.focal_gamma = gamma;
    o.mix = mix;
    o.loss.focal_detach = focal_detach;
    o.loss.mix_detach = mix_detach;
    auto r = run_training(o);
    DOCTEST_REQUIRE(r.steps == 2);
    return weights_of(o.output);
  };
  auto max_diff = [](const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
    double worst = 0;
    for (const auto& [k, v] : a) worst = std::max(worst, (v - b.at(k)).abs().max().item<double>());
    return worst;
  };
  using kalm::loss::MixMode;
  // Focal: with gamma > 0, w = (1-p)^gamma depends on the weights, so detaching it
  // changes the gradient; the update stays close (w is the same, only dw/dθ goes).
  {
    auto flowing = train(0.5, MixMode::kNone, false, true);
    auto detached = train(0.5, MixMode::kNone, true, true);
    DOCTEST_CHECK(!bit_equal(flowing, detached));
    DOCTEST_CHECK(max_diff(flowing, detached) > 0.0);
    DOCTEST_CHECK(max_diff(flowing, detached) < 1e-2);
    // gamma = 0: w = 1 has no gradient at all; the flag changes nothing.
    DOCTEST_CHECK(bit_equal(train(0.0, MixMode::kNone, false, true), train(0.0, MixMode::kNone, true, true)));
  }
  // Mixing: gradient through the synthetic negatives reaches the negatives they mix.
  {
    auto detached = train(0.0, MixMode::kPairwise, false, true);
    auto flowing = train(0.0, MixMode::kPairwise, false, false);
    DOCTEST_CHECK(!bit_equal(detached, flowing));
    DOCTEST_CHECK(max_diff(detached, flowing) < 1e-2);
    // Without synthetic negatives the flag has nothing to act on.
    DOCTEST_CHECK(bit_equal(train(0.0, MixMode::kNone, false, true), train(0.0, MixMode::kNone, false, false)));
  }
}

DOCTEST_TEST_CASE("teacher: on-the-fly scores are the cosines of the teacher's normalised embeddings") {
  TempDir t;
  auto o = tiny_options(t.sub("teacher"));
  o.stage = Stage::kPretrain;
  o.data.inputs = {kFixtures + "/toy/retrieval.jsonl"};
  o.max_steps = 2;
  run_training(o);

  Teacher teacher(t.sub("teacher"), 24, 6);
  DOCTEST_CHECK(teacher.model_dir() == t.sub("teacher"));
  const std::vector<std::string> queries{"what does the cat do", "the dog runs"};
  const std::vector<std::string> passages{"the cat sleeps on the mat", "a whale dives in the sea",
                                          "the dog runs in the park every single day", "a bird sings"};
  auto s = teacher.scores(queries, passages, 2);
  DOCTEST_REQUIRE((s.sizes() == torch::IntArrayRef({2, 2})));
  DOCTEST_CHECK((s.scalar_type() == torch::kDouble));
  // Independently: the exported model and tokenizer, mean pooling, passages cut at 6 tokens.
  auto m = kalm::model::load_model(t.sub("teacher"));
  auto tok = kalm::text::load_tokenizer(t.sub("teacher"));
  auto q = tokenize_batch(*tok, queries, 24);
  auto p = tokenize_batch(*tok, passages, 6);
  DOCTEST_CHECK(p.ids.size(1) <= 6);
  torch::NoGradGuard no_grad;
  auto qe = torch::nn::functional::normalize(m.encoder->embed(q.ids, q.mask, kalm::model::Pooling::Mean),
                                             torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto pe = torch::nn::functional::normalize(m.encoder->embed(p.ids, p.mask, kalm::model::Pooling::Mean),
                                             torch::nn::functional::NormalizeFuncOptions().dim(1));
  for (int i = 0; i < 2; ++i)
    for (int g = 0; g < 2; ++g) {
      const double want = qe[i].dot(pe[i * 2 + g]).item<double>();
      DOCTEST_CHECK(s[i][g].item<double>() == doctest::Approx(want).epsilon(1e-5));
    }
  DOCTEST_CHECK(s.abs().max().item<double>() <= 1.0 + 1e-9);
  // The same texts give the same bits (resume recomputes them).
  DOCTEST_CHECK(torch::equal(s, teacher.scores(queries, passages, 2)));

  DOCTEST_CHECK_THROWS_AS(teacher.scores(queries, passages, 3), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(teacher.scores(queries, passages, 0), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(Teacher(t.sub("missing"), 24, 24), kalm::ModelError);
  DOCTEST_CHECK_THROWS_AS(Teacher(t.sub("teacher"), 0, 24), kalm::UsageError);
}

DOCTEST_TEST_CASE("distill with a teacher: trains without record scores, ignores them, resumes bit-exactly") {
  TempDir t;
  auto teacher_run = tiny_options(t.sub("teacher"));
  teacher_run.stage = Stage::kPretrain;
  teacher_run.data.inputs = {kFixtures + "/toy/retrieval.jsonl"};
  teacher_run.max_steps = 3;
  teacher_run.seed = 9;
  run_training(teacher_run);
  auto student_run = teacher_run;
  student_run.output = t.sub("student");
  student_run.max_steps = 1;
  student_run.seed = 3;
  run_training(student_run);

  fs::create_directories(t.sub("plain"));
  const auto plain = strip_scores(kFixtures + "/toy/retrieval.jsonl", t.sub("plain/retrieval.jsonl"));
  auto o = tiny_options(t.sub("d_plain"));
  o.stage = Stage::kDistill;
  o.init_config.clear();
  o.train_tokenizer.reset();
  o.init = t.sub("student");
  o.teacher = t.sub("teacher");
  o.data.inputs = {plain};
  // Long enough for the instructed queries (24 tokens of the 48-piece tokenizer
  // hold little more than the instruction, leaving every query the same text).
  o.query_max_length = 128;
  o.passage_max_length = 128;
  o.num_negatives = 2;
  o.epochs = 2;  // 2 batches of 8 per epoch -> 4 steps
  o.metrics = t.sub("d_plain.jsonl");

  // Without the teacher, the records lack scores: a FormatError naming the record.
  auto no_teacher = o;
  no_teacher.teacher.clear();
  no_teacher.output = t.sub("d_none");
  DOCTEST_CHECK_THROWS_AS(run_training(no_teacher), kalm::FormatError);

  auto r = run_training(o);
  DOCTEST_REQUIRE(r.steps == 4);
  for (double l : r.losses) DOCTEST_CHECK(std::isfinite(l));
  DOCTEST_CHECK(fs::exists(fs::path(o.output) / "model.safetensors"));
  std::ifstream metrics(o.metrics);
  std::string first;
  std::getline(metrics, first);
  DOCTEST_CHECK(first.find("\"kl\": ") != std::string::npos);
  std::ifstream state(fs::path(o.output) / "kalm_training.json");
  std::string state_text((std::istreambuf_iterator<char>(state)), std::istreambuf_iterator<char>());
  DOCTEST_CHECK(state_text.find("\"teacher\": ") != std::string::npos);

  // The records' own scores are ignored: the same bits as without them.
  auto scored = o;
  scored.data.inputs = {kFixtures + "/toy/retrieval.jsonl"};
  scored.output = t.sub("d_scored");
  scored.metrics.clear();
  run_training(scored);
  DOCTEST_CHECK(bit_equal(weights_of(o.output), weights_of(scored.output)));

  // Stop after step 2 and resume: the teacher recomputes the same labels.
  auto part = o;
  part.output = t.sub("d_part");
  part.metrics.clear();
  part.stop_at_step = 2;
  DOCTEST_CHECK(run_training(part).stopped);
  part.stop_at_step.reset();
  part.resume = true;
  auto rest = run_training(part);
  DOCTEST_CHECK(rest.losses.size() == 2);
  DOCTEST_CHECK(rest.losses.back() == r.losses.back());
  DOCTEST_CHECK(bit_equal(weights_of(o.output), weights_of(part.output)));
  // ... and must name the same teacher.
  auto other = part;
  other.output = t.sub("d_part2");
  other.stop_at_step = 2;
  run_training(other);
  other.stop_at_step.reset();
  other.resume = true;
  other.teacher = t.sub("student");
  DOCTEST_CHECK_THROWS_AS(run_training(other), kalm::UsageError);

  // The KL term alone works with a teacher too.
  auto kl_only = o;
  kl_only.output = t.sub("d_kl");
  kl_only.metrics.clear();
  kl_only.max_steps = 1;
  kl_only.loss.distill_only = true;
  auto kl = run_training(kl_only);
  DOCTEST_REQUIRE(kl.losses.size() == 1);
  DOCTEST_CHECK(std::isfinite(kl.losses[0]));
  DOCTEST_CHECK(kl.losses[0] > 0.0);
  DOCTEST_CHECK(kl.losses[0] < r.losses[0]);  // the contrastive term is gone

  // Only the distill stage has a teacher.
  auto finetune = o;
  finetune.stage = Stage::kFinetune;
  finetune.output = t.sub("d_ft");
  DOCTEST_CHECK_THROWS_AS(run_training(finetune), kalm::UsageError);
}

DOCTEST_TEST_CASE("--device: training on CUDA follows the CPU run; without a GPU it is refused up front") {
  TempDir t;
  auto cuda = tiny_options(t.sub("cuda"));
  cuda.max_steps = 3;
  cuda.device = "cuda";
  if (!torch::cuda::is_available()) {
    DOCTEST_CHECK_THROWS_AS(run_training(cuda), kalm::UsageError);
    DOCTEST_CHECK(!fs::exists(cuda.output));  // refused before anything is written
    auto bad = tiny_options(t.sub("bad"));
    bad.device = "gpu";
    DOCTEST_CHECK_THROWS_AS(run_training(bad), kalm::UsageError);
    return;
  }
  // GPU machines: 3 steps from the same seed, then a resume of a 2-step run on
  // the GPU from a checkpoint (the optimiser state comes back onto the GPU).
  auto cpu = tiny_options(t.sub("cpu"));
  cpu.max_steps = 3;
  const auto r_cpu = run_training(cpu);
  const auto r_cuda = run_training(cuda);
  DOCTEST_REQUIRE(r_cuda.losses.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) DOCTEST_CHECK(r_cuda.losses[i] == doctest::Approx(r_cpu.losses[i]).epsilon(1e-4));
  const auto a = weights_of(cpu.output), b = weights_of(cuda.output);
  for (const auto& [name, w] : a) {
    DOCTEST_INFO(name);
    DOCTEST_CHECK((w - b.at(name)).abs().max().item<double>() < 1e-4);
  }
  auto part = tiny_options(t.sub("part"));
  part.max_steps = 3;
  part.device = "cuda";
  part.stop_at_step = 2;
  DOCTEST_CHECK(run_training(part).stopped);
  part.stop_at_step.reset();
  part.resume = true;
  DOCTEST_CHECK(run_training(part).steps == 3);
  const auto c = weights_of(part.output);
  for (const auto& [name, w] : b) DOCTEST_CHECK((w - c.at(name)).abs().max().item<double>() < 1e-5);
}

DOCTEST_TEST_CASE("--train-tokenizer: the exported Llama tokenizer gives sentencepiece's own ids (no normaliser)") {
  // kalm encodes a tokenizer.model under a LlamaTokenizer config as
  // transformers' LlamaTokenizerFast does (checked against it in
  // tests/unit/text/test_spm_export_parity.cpp), which applies no
  // normalisation. A tokenizer trained without normalisation (identity rule,
  // spaces kept) gives the same ids through plain sentencepiece, and so
  // through the slow LlamaTokenizer, which calls sentencepiece.
  TempDir t;
  auto o = tiny_options(t.sub("out"));
  o.max_steps = 1;
  run_training(o);
  const auto as_exported = kalm::text::load_tokenizer(o.output);
  const auto plain = kalm::text::load_sentencepiece(o.output + "/tokenizer.model");
  kalm::text::EncodeOptions eo;
  eo.add_special_tokens = true;
  const std::vector<std::string> texts = {
      "what does a horse do", "two  spaces", " leading", "trailing ", "tab\there", "new\nline",
      "\xef\xbd\x86\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c width",  // fullwidth "full": NFKC would fold it
      "cafe\xcc\x81", "\xe2\x85\xab", "", "   "};
  for (const auto& text : texts) {
    DOCTEST_INFO("text: [" << text << "]");
    DOCTEST_CHECK(as_exported->encode(text, eo).ids == plain->encode(text, eo).ids);
  }
  // The fullwidth letters stay apart from ASCII (NFKC would have made them "full").
  DOCTEST_CHECK(plain->encode("\xef\xbd\x86\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c", eo).ids !=
                plain->encode("full", eo).ids);
}

DOCTEST_TEST_CASE("build_batch with BPE dropout: same groups, seeded ids, instruction prompts whole") {
  DataOptions dopt;
  dopt.inputs = {kFixtures + "/toy"};
  dopt.instructions_file = kFixtures + "/instructions.json";
  dopt.instruction_template = "Instruct: {instruction}\nQuery:\n{query}";
  Dataset data = load_dataset(dopt);
  std::vector<std::string> texts;
  for (const auto& ex : data.examples) {
    texts.push_back(ex.query);
    texts.insert(texts.end(), ex.pos.begin(), ex.pos.end());
  }
  kalm::text::ByteLevelBpeTrainOptions bo;
  bo.vocab_size = 400;
  auto tok = kalm::text::parse_hf_tokenizer_json(kalm::text::train_byte_level_bpe(texts, bo));
  kalm::text::EncodeOptions plain_options;
  plain_options.add_special_tokens = false;
  PromptTokenCount prompt_ids = [&](const std::string& prompt) {
    return static_cast<std::int64_t>(tok->encode(prompt, plain_options).ids.size());
  };
  const std::vector<std::size_t> indices{8, 9, 10, 11, 24, 25, 0, 1};
  auto build = [&](double p) {
    auto rng = batch_rng(5, 0, 0);
    return build_batch(data, indices, 3, false, rng, *tok, 64, 64, prompt_ids, p, prompt_ids);
  };
  const auto plain = build(0), a = build(0.5), b = build(0.5);
  DOCTEST_CHECK(a.query_texts == plain.query_texts);
  DOCTEST_CHECK(a.passage_texts == plain.passage_texts);
  DOCTEST_CHECK(torch::equal(a.queries.ids, b.queries.ids));
  DOCTEST_CHECK(torch::equal(a.passages.ids, b.passages.ids));
  DOCTEST_CHECK(a.queries.pool_from == plain.queries.pool_from);
  // Dropout splits words: more tokens than the deterministic encoding.
  DOCTEST_CHECK(a.passages.tokens > plain.passages.tokens);
  int with_prompt = 0;
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const auto n = a.queries.pool_from[i];
    if (n == 0) continue;
    ++with_prompt;
    const auto row = static_cast<std::int64_t>(i);
    DOCTEST_CHECK(torch::equal(a.queries.ids[row].narrow(0, 0, n), plain.queries.ids[row].narrow(0, 0, n)));
    DOCTEST_CHECK(a.queries.lengths[i] > n);
  }
  DOCTEST_CHECK(with_prompt >= 4);
  // Without prompt_model_ids a prompted query cannot keep its prompt whole.
  auto rng = batch_rng(5, 0, 0);
  DOCTEST_CHECK_THROWS_AS(build_batch(data, indices, 3, false, rng, *tok, 64, 64, prompt_ids, 0.5),
                          kalm::InternalError);
}

DOCTEST_TEST_CASE("run_training flushes subnormal floats unless keep_denormals, and records which in its state") {
#if defined(__x86_64__)
  TempDir t;
  volatile float min_normal = 1.17549435e-38f;
  auto read_text = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  kalm::core::set_flush_denormals(false);
  auto kept = tiny_options(t.sub("kept"));
  kept.max_steps = 1;
  kept.keep_denormals = true;
  run_training(kept);
  DOCTEST_CHECK(min_normal * 0.5f != 0.0f);
  DOCTEST_CHECK(read_text(t.sub("kept") + "/kalm_training.json").find("\"cpu_denormals\": \"kept\"") !=
                std::string::npos);

  auto flushed = tiny_options(t.sub("flushed"));
  flushed.max_steps = 1;
  run_training(flushed);
  DOCTEST_CHECK(min_normal * 0.5f == 0.0f);  // the calling thread runs flushed now
  DOCTEST_CHECK(read_text(t.sub("flushed") + "/kalm_training.json").find("\"cpu_denormals\": \"flushed\"") !=
                std::string::npos);
  kalm::core::set_flush_denormals(false);  // the other tests run as they always did
#else
  DOCTEST_MESSAGE("flush-to-zero is checked on x86-64 only");
#endif
}
