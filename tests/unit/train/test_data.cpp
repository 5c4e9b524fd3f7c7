// Training data: tasks, instructions, batching rules and group sampling.
#include <unistd.h>

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "kalm/error.h"
#include "kalm/io/remove_tree.h"
#include "kalm/train/data.h"

namespace fs = std::filesystem;
using namespace kalm::train;

namespace {

const std::string kToy = std::string(KALM_FIXTURES_DIR) + "/train/toy";
const std::string kInstructions = std::string(KALM_FIXTURES_DIR) + "/train/instructions.json";

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("kalm_train_data_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() { kalm::io::remove_tree_nothrow(std::filesystem::path(path).string()); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

Dataset toy(bool instructions = true) {
  DataOptions o;
  o.inputs = {kToy};
  if (instructions) o.instructions_file = kInstructions;
  return load_dataset(o);
}

}  // namespace

DOCTEST_TEST_CASE("load_dataset: one task per file, instructions on queries only") {
  Dataset d = toy();
  DOCTEST_REQUIRE(d.examples.size() == 32);
  // Files are read in name order: classification, retrieval, sts.
  DOCTEST_CHECK(d.tasks == std::vector<std::string>{"classification", "retrieval", "sts"});
  const Example& cls = d.examples[0];
  DOCTEST_CHECK(cls.task == 0);
  DOCTEST_CHECK(cls.type == "classification");
  // The record's own instruction wins over the file's "" for the task.
  DOCTEST_CHECK(cls.query == "Instruct: Classify where the animal lives \n Query: the cat sleeps on the mat");
  const Example& ret = d.examples[8];
  DOCTEST_CHECK(d.tasks[static_cast<std::size_t>(ret.task)] == "retrieval");
  DOCTEST_CHECK(ret.query ==
                "Instruct: Given a question, retrieve the sentence that answers it \n Query: what does the cat do");
  DOCTEST_CHECK(ret.pos[0] == "the cat sleeps on the mat");  // passages get no instruction
  DOCTEST_CHECK(ret.pos_scores == std::vector<double>{0.9, 0.9});
  DOCTEST_CHECK(ret.source.find("retrieval.jsonl:1") != std::string::npos);
  DOCTEST_CHECK(d.instructions.at("sts") == "Retrieve semantically similar text");
  DOCTEST_CHECK(d.instructions.count("classification") == 1);

  Dataset plain = toy(false);
  DOCTEST_CHECK(plain.examples[8].query == "what does the cat do");
}

DOCTEST_TEST_CASE("load_dataset: task field, template, and bad input") {
  TempDir t;
  auto f = t.write("a.jsonl.zst.jsonl", "{\"query\":\"q1\",\"pos\":[\"p\"],\"task\":\"x\"}\n{\"query\":\"q2\",\"pos\":[\"p\"]}\n");
  DataOptions o;
  o.inputs = {f};
  Dataset d = load_dataset(o);
  DOCTEST_CHECK(d.tasks == std::vector<std::string>{"x", "a"});

  auto instr = t.write("i.json", "{\"x\": \"do X\"}");
  o.instructions_file = instr;
  // Task "a" has no entry: the data and the instructions file disagree (exit 1).
  DOCTEST_CHECK_THROWS_WITH_AS(load_dataset(o),
                               (f + ":2: task 'a' has no entry in " + instr + " (use \"\" for no instruction)").c_str(),
                               kalm::FormatError);
  o.instructions_file.clear();

  o.instruction_template = "{instruction}: {query}";
  DOCTEST_CHECK(apply_query_template(o.instruction_template, "I", "Q {instruction}") == "I: Q {instruction}");
  DOCTEST_CHECK(apply_query_template("{query} [{instruction}]", "I", "Q") == "Q [I]");
  o.instruction_template = "no placeholders";
  DOCTEST_CHECK_THROWS_AS(load_dataset(o), kalm::UsageError);

  DataOptions stdin_opts;
  stdin_opts.inputs = {"-"};
  DOCTEST_CHECK_THROWS_AS(load_dataset(stdin_opts), kalm::UsageError);
  DataOptions none;
  DOCTEST_CHECK_THROWS_AS(load_dataset(none), kalm::UsageError);
  DataOptions empty;
  empty.inputs = {t.write("empty.jsonl", "")};
  DOCTEST_CHECK_THROWS_WITH_AS(load_dataset(empty), (empty.inputs[0] + ": no training groups (the input is empty)").c_str(),
                               kalm::FormatError);
  DataOptions missing;
  missing.inputs = {(t.path / "nope.jsonl").string()};
  DOCTEST_CHECK_THROWS_AS(load_dataset(missing), kalm::IoError);

  DataOptions bad;
  bad.inputs = {t.write("bad.jsonl", "{\"query\":\"q\",\"pos\":[\"p\"]}\n{\"query\":\"q\"}\n")};
  try {
    load_dataset(bad);
    DOCTEST_FAIL("expected FormatError");
  } catch (const kalm::FormatError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("bad.jsonl:2") != std::string::npos);
  }
  DataOptions bad_instr;
  bad_instr.inputs = {f};
  bad_instr.instructions_file = t.write("bad.json", "[1, 2]");
  DOCTEST_CHECK_THROWS_AS(load_dataset(bad_instr), kalm::FormatError);
}

DOCTEST_TEST_CASE("load_dataset: --oversample repeats a task's groups, after all inputs, in order") {
  DataOptions o;
  o.inputs = {kToy};
  o.instructions_file = kInstructions;
  o.oversample = {{"sts", 3}, {"classification", 1}};
  Dataset d = load_dataset(o);
  Dataset plain = toy();
  std::map<std::int32_t, int> before, after;
  for (const auto& e : plain.examples) before[e.task]++;
  for (const auto& e : d.examples) after[e.task]++;
  DOCTEST_REQUIRE(before.size() == 3);
  DOCTEST_CHECK(after[0] == before[0]);      // classification x1
  DOCTEST_CHECK(after[1] == before[1]);      // retrieval, not named
  DOCTEST_CHECK(after[2] == 3 * before[2]);  // sts x3
  DOCTEST_REQUIRE(d.examples.size() == plain.examples.size() + 2 * static_cast<std::size_t>(before[2]));
  // The loaded examples first, unchanged; then each copy of the sts groups in order.
  std::vector<std::size_t> sts;
  for (std::size_t i = 0; i < plain.examples.size(); ++i) {
    DOCTEST_CHECK(d.examples[i].query == plain.examples[i].query);
    if (plain.examples[i].task == 2) sts.push_back(i);
  }
  for (std::size_t c = 0; c < 2; ++c)
    for (std::size_t j = 0; j < sts.size(); ++j) {
      const Example& copy = d.examples[plain.examples.size() + c * sts.size() + j];
      const Example& original = plain.examples[sts[j]];
      DOCTEST_CHECK(copy.query == original.query);
      DOCTEST_CHECK(copy.pos == original.pos);
      DOCTEST_CHECK(copy.source == original.source);
      DOCTEST_CHECK(copy.task == 2);
    }

  o.oversample = {{"nope", 2}};
  DOCTEST_CHECK_THROWS_WITH_AS(load_dataset(o),
                               "--oversample nope=2: no input has task 'nope' (tasks: classification, retrieval, sts)",
                               kalm::UsageError);
  o.oversample = {{"sts", 0}};
  DOCTEST_CHECK_THROWS_WITH_AS(load_dataset(o), "--oversample sts=0: the factor must be at least 1", kalm::UsageError);

  DOCTEST_CHECK(parse_oversample("fd-eng-fra=3") == std::pair<std::string, std::int64_t>{"fd-eng-fra", 3});
  DOCTEST_CHECK(parse_oversample("a=b=12") == std::pair<std::string, std::int64_t>{"a=b", 12});  // last '=' splits
  DOCTEST_CHECK(parse_oversample("t=1000").second == 1000);
  for (const char* bad : {"fd-eng-fra", "=3", "t=", "t=0", "t=1001", "t=-2", "t=2.5", "t=3x", "t= 3", "t=99999"})
    DOCTEST_CHECK_THROWS_AS(parse_oversample(bad), kalm::UsageError);
  DOCTEST_CHECK_THROWS_WITH_AS(parse_oversample("t=2.5"),
                               "--oversample 't=2.5': '2.5' is not a whole number (want TASK=K, K an integer from 1 to 1000)",
                               kalm::UsageError);
}

DOCTEST_TEST_CASE("plan_epoch: homogeneous batches hold one task; ratio mixes the tail") {
  Dataset d = toy();
  BatchingOptions b;
  b.batch_size = 4;
  b.task_homogeneous = true;
  auto plan = plan_epoch(d, b, 7, 0);
  // 8 + 16 + 8 groups cut in 4s: no leftovers.
  DOCTEST_CHECK(plan.batches.size() == 8);
  DOCTEST_CHECK(plan.dropped == 0);
  std::multiset<std::size_t> seen;
  for (const auto& batch : plan.batches) {
    DOCTEST_REQUIRE(batch.size() == 4);
    for (auto i : batch) {
      seen.insert(i);
      DOCTEST_CHECK(d.examples[i].task == d.examples[batch[0]].task);
    }
  }
  DOCTEST_CHECK(seen.size() == 32);
  DOCTEST_CHECK(std::set<std::size_t>(seen.begin(), seen.end()).size() == 32);

  // Ratio 0.5: the first 2 slots keep one task; the last 2 are a permutation of all tails.
  b.homogeneous_ratio = 0.5;
  auto mixed = plan_epoch(d, b, 7, 0);
  DOCTEST_REQUIRE(mixed.batches.size() == 8);
  std::multiset<std::size_t> tails_before, tails_after;
  bool some_mixed = false;
  for (std::size_t k = 0; k < 8; ++k) {
    DOCTEST_CHECK(mixed.batches[k][0] == plan.batches[k][0]);
    DOCTEST_CHECK(mixed.batches[k][1] == plan.batches[k][1]);
    for (std::size_t s = 2; s < 4; ++s) {
      tails_before.insert(plan.batches[k][s]);
      tails_after.insert(mixed.batches[k][s]);
      if (d.examples[mixed.batches[k][s]].task != d.examples[mixed.batches[k][0]].task) some_mixed = true;
    }
  }
  DOCTEST_CHECK(tails_before == tails_after);
  DOCTEST_CHECK(some_mixed);

  // Leftovers are pooled into mixed batches; a final partial batch is dropped and counted.
  b.batch_size = 5;
  b.homogeneous_ratio = 1.0;
  auto five = plan_epoch(d, b, 7, 0);
  // classification 8 -> 1 + 3 left, retrieval 16 -> 3 + 1, sts 8 -> 1 + 3; leftovers 7 -> 1 + 2 dropped.
  DOCTEST_CHECK(five.batches.size() == 6);
  DOCTEST_CHECK(five.dropped == 2);
}

DOCTEST_TEST_CASE("plan_epoch: deterministic by seed and epoch; random batches cover the data") {
  Dataset d = toy();
  BatchingOptions b;
  b.batch_size = 6;
  auto a1 = plan_epoch(d, b, 42, 0);
  auto a2 = plan_epoch(d, b, 42, 0);
  auto e1 = plan_epoch(d, b, 42, 1);
  auto s2 = plan_epoch(d, b, 43, 0);
  DOCTEST_CHECK(a1.batches == a2.batches);
  DOCTEST_CHECK(a1.batches != e1.batches);
  DOCTEST_CHECK(a1.batches != s2.batches);
  DOCTEST_CHECK(a1.batches.size() == 5);
  DOCTEST_CHECK(a1.dropped == 2);
  // Not homogeneous: batches mix tasks.
  bool any_mixed = false;
  for (const auto& batch : a1.batches)
    for (auto i : batch) any_mixed |= d.examples[i].task != d.examples[batch[0]].task;
  DOCTEST_CHECK(any_mixed);

  b.batch_size = 0;
  DOCTEST_CHECK_THROWS_AS(plan_epoch(d, b, 1, 0), kalm::UsageError);
  b.batch_size = 33;
  DOCTEST_CHECK_THROWS_AS(plan_epoch(d, b, 1, 0), kalm::UsageError);
  b.batch_size = 4;
  b.homogeneous_ratio = 1.5;
  DOCTEST_CHECK_THROWS_AS(plan_epoch(d, b, 1, 0), kalm::UsageError);
}

DOCTEST_TEST_CASE("sample_group: negatives with replacement when too few, positives drawn per step") {
  Dataset d = toy();
  // retrieval line 1 (example 8): 2 positives, 1 negative; line 3 (example 10): 3 negatives.
  auto rng = batch_rng(1, 0, 0);
  auto g = sample_group(d, 8, 7, true, rng);
  DOCTEST_REQUIRE(g.passages.size() == 8);
  for (std::size_t k = 1; k < 8; ++k) DOCTEST_CHECK(g.passages[k] == d.examples[8].neg[0]);
  DOCTEST_CHECK(g.teacher_scores.size() == 8);
  DOCTEST_CHECK(g.teacher_scores[0] == 0.9);
  DOCTEST_CHECK(g.teacher_scores[7] == 0.5);

  // 3 negatives, M = 7: drawn from the list repeated 3 times, so each appears 1..3 times.
  std::map<std::string, int> counts;
  auto g2 = sample_group(d, 10, 7, false, rng);
  DOCTEST_CHECK(g2.teacher_scores.empty());
  for (std::size_t k = 1; k < g2.passages.size(); ++k) ++counts[g2.passages[k]];
  DOCTEST_CHECK(counts.size() == 3);
  for (const auto& [text, n] : counts) {
    DOCTEST_CHECK(n >= 1);
    DOCTEST_CHECK(n <= 3);
  }
  // M <= |neg|: distinct negatives.
  auto g3 = sample_group(d, 10, 3, false, rng);
  DOCTEST_CHECK(std::set<std::string>(g3.passages.begin() + 1, g3.passages.end()).size() == 3);
  // M = 0: the positive only.
  DOCTEST_CHECK(sample_group(d, 10, 0, false, rng).passages.size() == 1);

  // Both positives of example 8 get drawn over many steps; same seed, same draws.
  std::set<std::string> positives;
  for (int s = 0; s < 64; ++s) {
    auto r = batch_rng(1, 0, static_cast<std::uint64_t>(s));
    positives.insert(sample_group(d, 8, 1, false, r).passages[0]);
  }
  DOCTEST_CHECK(positives.size() == 2);
  auto r1 = batch_rng(9, 2, 3), r2 = batch_rng(9, 2, 3);
  DOCTEST_CHECK(sample_group(d, 10, 7, false, r1).passages == sample_group(d, 10, 7, false, r2).passages);
}

DOCTEST_TEST_CASE("sample_group: missing negatives or teacher scores name the record") {
  TempDir t;
  DataOptions o;
  o.inputs = {t.write("t.jsonl", "{\"query\":\"q\",\"pos\":[\"p\"]}\n")};
  Dataset d = load_dataset(o);
  auto rng = batch_rng(0, 0, 0);
  DOCTEST_CHECK(sample_group(d, 0, 0, false, rng).passages == std::vector<std::string>{"p"});
  try {
    sample_group(d, 0, 2, false, rng);
    DOCTEST_FAIL("expected FormatError");
  } catch (const kalm::FormatError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("t.jsonl:1") != std::string::npos);
  }
  DOCTEST_CHECK_THROWS_AS(sample_group(d, 0, 0, true, rng), kalm::FormatError);
}

DOCTEST_TEST_CASE("uniform_index: in range, reproducible") {
  std::mt19937_64 a(5), b(5);
  for (int i = 0; i < 200; ++i) {
    auto x = uniform_index(a, 7);
    DOCTEST_CHECK(x < 7);
    DOCTEST_CHECK(x == uniform_index(b, 7));
  }
  DOCTEST_CHECK(uniform_index(a, 1) == 0);
}
