// Task directories and runners, driven by a deterministic text encoder (hashed
// character trigrams) over the example tasks in examples/eval/.
#include <unistd.h>

#include <doctest/doctest.h>

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/eval/runner.h"
#include "kalm/eval/task.h"
#include "kalm/io/remove_tree.h"

namespace fs = std::filesystem;
using namespace kalm::eval;

namespace {

const std::string kExamples = std::string(KALM_SOURCE_DIR) + "/examples/eval";

// Bag of hashed, lower-cased character trigrams: texts that share words get
// similar vectors, which is all the runners need to show real behaviour.
class TrigramEncoder : public TextEncoder {
 public:
  explicit TrigramEncoder(std::int64_t dim) : dim_(dim) {}
  torch::Tensor encode(const std::vector<std::string>& texts, const std::string&, const std::string&) override {
    calls_ += 1;
    texts_ += static_cast<std::int64_t>(texts.size());
    last_texts_ = texts;
    torch::Tensor out = torch::zeros({static_cast<std::int64_t>(texts.size()), dim_});
    auto acc = out.accessor<float, 2>();
    for (std::size_t i = 0; i < texts.size(); ++i) {
      std::string t = " " + texts[i] + " ";
      for (auto& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      for (std::size_t j = 0; j + 3 <= t.size(); ++j) {
        std::uint64_t h = 1469598103934665603ULL;
        for (std::size_t k = j; k < j + 3; ++k) h = (h ^ static_cast<unsigned char>(t[k])) * 1099511628211ULL;
        acc[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(h % static_cast<std::uint64_t>(dim_))] += 1;
      }
    }
    return out;
  }
  std::int64_t dim() const override { return dim_; }
  int calls_ = 0;
  std::int64_t texts_ = 0;
  std::vector<std::string> last_texts_;

 private:
  std::int64_t dim_;
};

struct TempDir {
  TempDir() {
    path = fs::temp_directory_path() / ("kalm-eval-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    kalm::io::remove_tree_nothrow(std::filesystem::path(path).string());
    fs::create_directories(path);
  }
  ~TempDir() { kalm::io::remove_tree_nothrow(std::filesystem::path(path).string()); }
  void write(const std::string& name, const std::string& text) const {
    fs::create_directories((path / name).parent_path());
    std::ofstream(path / name) << text;
  }
  std::string str() const { return path.string(); }
  fs::path path;
  static inline int counter = 0;
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

double main_of(const TaskResult& r, std::size_t dim_index = 0) { return r.splits.at(0).dims.at(dim_index).main_score; }

}  // namespace

DOCTEST_TEST_CASE("task.json: fields, defaults and the main score of every type") {
  auto spec = load_task_spec(kExamples + "/retrieval");
  DOCTEST_CHECK(spec.type == TaskKind::kRetrieval);
  DOCTEST_CHECK(spec.name == "LicenseRetrieval");
  DOCTEST_CHECK(spec.main_score == "ndcg_at_10");
  DOCTEST_CHECK(spec.splits == std::vector<std::string>{"test"});
  DOCTEST_CHECK(spec.languages == std::vector<std::string>{"eng-Latn"});
  DOCTEST_CHECK(spec.instruction == "Given a phrase, retrieve the license paragraph that contains it");
  auto cls = load_task_spec(kExamples + "/classification");
  DOCTEST_CHECK(cls.n_experiments == 3);
  DOCTEST_CHECK(cls.samples_per_label == 8);
  DOCTEST_CHECK(cls.train_split == "train");
  DOCTEST_CHECK(default_main_score(TaskKind::kSts) == "cosine_spearman");
  DOCTEST_CHECK(default_main_score(TaskKind::kPairClassification) == "max_ap");
  DOCTEST_CHECK(default_main_score(TaskKind::kReranking) == "map");
  DOCTEST_CHECK(default_main_score(TaskKind::kBitext) == "f1");
  DOCTEST_CHECK(parse_task_kind("pair_classification") == TaskKind::kPairClassification);
  DOCTEST_CHECK(!parse_task_kind("Retrieval"));

  TempDir t;
  t.write("task.json", R"({"type": "sts"})");
  auto named = load_task_spec(t.str());
  DOCTEST_CHECK(named.name == t.path.filename().string());  // the directory's name
  DOCTEST_CHECK(load_task_spec(t.str() + "/").name == t.path.filename().string());
  DOCTEST_CHECK(load_task_spec(t.str() + "/.").name == t.path.filename().string());
  DOCTEST_CHECK(named.instruction.empty());
  DOCTEST_CHECK(named.instruction_both_sides);
}

DOCTEST_TEST_CASE("task.json: bad input names the file and the field") {
  TempDir t;
  DOCTEST_CHECK_THROWS_AS(load_task_spec(t.str()), kalm::IoError);
  DOCTEST_CHECK(message_of([&] { load_task_spec(t.str()); }).find("task.json") != std::string::npos);
  DOCTEST_CHECK_THROWS_AS(load_task_spec(t.str() + "/nope"), kalm::IoError);
  t.write("task.json", R"({"type": "ranking"})");
  auto m = message_of([&] { load_task_spec(t.str()); });
  DOCTEST_CHECK(m.find("task.json: field 'type': unknown task type 'ranking'") != std::string::npos);
  t.write("task.json", R"({"type": "sts", "splits": []})");
  DOCTEST_CHECK_THROWS_AS(load_task_spec(t.str()), kalm::FormatError);
  t.write("task.json", R"({"type": "sts", "split": ["test"]})");
  DOCTEST_CHECK(message_of([&] { load_task_spec(t.str()); }).find("field 'split': unknown field") != std::string::npos);
  t.write("task.json", R"({"type": "classification", "n_experiments": 0})");
  DOCTEST_CHECK_THROWS_AS(load_task_spec(t.str()), kalm::FormatError);
  t.write("task.json", R"({"type": 3})");
  DOCTEST_CHECK(message_of([&] { load_task_spec(t.str()); }).find("field 'type': expected a string") != std::string::npos);
  t.write("task.json", "{\"type\": \"sts\"");
  DOCTEST_CHECK(message_of([&] { load_task_spec(t.str()); }).find("invalid JSON") != std::string::npos);
}

DOCTEST_TEST_CASE("data files: records, titles, qrels forms, and errors with file:line") {
  auto spec = load_task_spec(kExamples + "/retrieval");
  auto data = load_retrieval(spec, "test");
  DOCTEST_CHECK(data.corpus_ids.size() == 39);
  DOCTEST_CHECK(data.query_ids.size() == 12);
  DOCTEST_CHECK(data.qrels.size() == 12);
  DOCTEST_CHECK(data.corpus_texts[0].rfind("GNU GPL 3 ", 0) == 0);  // title + " " + text

  TempDir t;
  t.write("mteb.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td1\t2\n");
  t.write("trec.txt", "q1 0 d1 1\nq1 0 d2 0\n# comment\n\nq2 Q0 d1 2\n");
  auto a = read_qrels_any(t.str() + "/mteb.tsv");
  auto b = read_qrels_any(t.str() + "/trec.txt");
  const bool same_qrels = a == b;
  DOCTEST_CHECK(same_qrels);
  DOCTEST_CHECK(a.at("q2").at("d1") == 2);
  DOCTEST_CHECK(a.at("q1").size() == 2);
  t.write("bad.tsv", "q1\td1\t1\nq1\td1\t1\n");
  DOCTEST_CHECK(message_of([&] { read_qrels_any(t.str() + "/bad.tsv"); }).find("bad.tsv:2: query 'q1' judges document 'd1' again (first at line 1)") != std::string::npos);
  t.write("mixed.tsv", "q1\td1\t1\nq1 0 d2 1\n");
  DOCTEST_CHECK(message_of([&] { read_qrels_any(t.str() + "/mixed.tsv"); }).find("mixed.tsv:2:") != std::string::npos);
  t.write("notint.tsv", "q1\td1\t1\nq1\td2\thigh\n");
  DOCTEST_CHECK(message_of([&] { read_qrels_any(t.str() + "/notint.tsv"); }).find("notint.tsv:2: relevance 'high'") != std::string::npos);
  t.write("empty.tsv", "query-id\tcorpus-id\tscore\n");
  DOCTEST_CHECK_THROWS_AS(read_qrels_any(t.str() + "/empty.tsv"), kalm::FormatError);

  t.write("task.json", R"({"type": "sts"})");
  t.write("test.jsonl", "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"score\": 1}\n\n{\"sentence1\": \"a\", \"sentence2\": \"b\"}\n");
  auto sts = load_task_spec(t.str());
  DOCTEST_CHECK(message_of([&] { load_pairs(sts, "test"); }).find("test.jsonl:3: field 'score': missing") != std::string::npos);
  t.write("test.jsonl", "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"score\": 1}\n{\"sentence1\": \"a\", \"sentence2\": \n");
  DOCTEST_CHECK(message_of([&] { load_pairs(sts, "test"); }).find("test.jsonl:2: invalid JSON") != std::string::npos);
  t.write("test.jsonl", "[1, 2]\n");
  DOCTEST_CHECK(message_of([&] { load_pairs(sts, "test"); }).find("test.jsonl:1: a record must be a JSON object") != std::string::npos);
  t.write("test.jsonl", "");
  DOCTEST_CHECK(message_of([&] { load_pairs(sts, "test"); }).find("no records") != std::string::npos);
  fs::remove(t.path / "test.jsonl");
  DOCTEST_CHECK_THROWS_AS(load_pairs(sts, "test"), kalm::IoError);

  t.write("task.json", R"({"type": "pair_classification"})");
  t.write("test.jsonl", "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 2}\n");
  DOCTEST_CHECK(message_of([&] { load_pairs(load_task_spec(t.str()), "test"); }).find("test.jsonl:1: field 'label': expected 0 or 1") != std::string::npos);

  // Clustering: both record forms, integer and string labels.
  t.write("task.json", R"({"type": "clustering"})");
  t.write("test.jsonl", "{\"sentences\": [\"a\", \"b\", \"c\"], \"labels\": [1, 2, 1]}\n{\"sentences\": [\"d\"], \"labels\": [\"x\"]}\n");
  auto sets = load_clustering(load_task_spec(t.str()), "test");
  DOCTEST_REQUIRE(sets.size() == 2);
  DOCTEST_CHECK(sets[0].labels == std::vector<std::int64_t>{0, 1, 0});
  t.write("test.jsonl", "{\"sentences\": [\"a\", \"b\"], \"labels\": [1]}\n");
  DOCTEST_CHECK(message_of([&] { load_clustering(load_task_spec(t.str()), "test"); }).find("test.jsonl:1: 2 sentences but 1 labels") != std::string::npos);
  t.write("test.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"sentences\": [\"a\"], \"labels\": [1]}\n");
  DOCTEST_CHECK(message_of([&] { load_clustering(load_task_spec(t.str()), "test"); }).find("test.jsonl:2: mixes") != std::string::npos);

  // Retrieval: a duplicate document id, a qrels query with no query text.
  t.write("task.json", R"({"type": "retrieval"})");
  t.write("corpus.jsonl", "{\"id\": \"d1\", \"text\": \"x\"}\n{\"id\": \"d1\", \"text\": \"y\"}\n");
  t.write("queries.jsonl", "{\"id\": 7, \"text\": \"x\"}\n");
  t.write("qrels/test.tsv", "7\td1\t1\n");
  auto rs = load_task_spec(t.str());
  DOCTEST_CHECK(message_of([&] { load_retrieval(rs, "test"); }).find("corpus.jsonl:2: field 'id': duplicate document id 'd1'") != std::string::npos);
  t.write("corpus.jsonl", "{\"id\": \"d1\", \"text\": \"x\"}\n{\"id\": \"d2\", \"text\": \"y\"}\n");
  auto ok = load_retrieval(rs, "test");  // integer query id 7 reads as "7"
  DOCTEST_CHECK(ok.query_ids == std::vector<std::string>{"7"});
  t.write("qrels/test.tsv", "8\td1\t1\n");
  DOCTEST_CHECK(message_of([&] { load_retrieval(rs, "test"); }).find("query '8' is not in") != std::string::npos);
}

DOCTEST_TEST_CASE("runners: every example task, two Matryoshka widths, BM25 beside retrieval") {
  TrigramEncoder enc(64);
  RunnerOptions o;
  o.dims = {64, 16};

  auto retrieval = run_task(load_task_spec(kExamples + "/retrieval"), enc, o);
  DOCTEST_REQUIRE(retrieval.splits.size() == 1);
  const auto& s = retrieval.splits[0];
  DOCTEST_REQUIRE(s.dims.size() == 2);
  DOCTEST_CHECK(s.dims[0].dim == 64);
  DOCTEST_CHECK(s.dims[1].dim == 16);
  // Queries are halves of sentences of their paragraph: trigrams find most of them.
  DOCTEST_CHECK(main_of(retrieval) > 0.5);
  DOCTEST_CHECK(main_of(retrieval) == metric_value(s.dims[0].metrics, "ndcg_at_10"));
  DOCTEST_CHECK(metric_value(s.dims[0].metrics, "num_queries") == 12);
  for (const char* k : {"map_at_10", "recall_at_100", "precision_at_10", "mrr_at_10", "ndcg_at_1000", "hit_rate_at_1"})
    DOCTEST_CHECK(metric_value(s.dims[0].metrics, k) >= 0);
  DOCTEST_CHECK(metric_value(s.dims[0].metrics, "recall_at_100") == 1.0);  // 39 docs: all ranked
  DOCTEST_REQUIRE(s.bm25.has_value());
  DOCTEST_CHECK(s.bm25_main_score > 0.9);  // exact word overlap
  // The instruction prefixes queries only; the corpus is embedded last, as is.
  DOCTEST_CHECK(enc.last_texts_.size() == 39);
  DOCTEST_CHECK(enc.last_texts_[0].rfind("GNU GPL 3 ", 0) == 0);

  // Floors well above chance (bitext: 1/24, classification: 1/4) and below what
  // trigram bags reach at width 16; clustering of 32 sentences by license is
  // hard for trigram bags (chance V-measure ~0.05).
  const std::map<std::string, double> floor = {{"reranking", 0.8},      {"sts", 0.6},        {"pair_classification", 0.55},
                                               {"classification", 0.3}, {"clustering", 0.08}, {"bitext", 0.15}};
  for (const auto& [task, least] : floor) {
    DOCTEST_CAPTURE(task);
    auto r = run_task(load_task_spec(kExamples + "/" + task), enc, o);
    DOCTEST_REQUIRE(r.splits.size() == 1);
    DOCTEST_REQUIRE(r.splits[0].dims.size() == 2);
    for (const auto& d : r.splits[0].dims) {
      DOCTEST_CHECK(std::isfinite(d.main_score));
      DOCTEST_CHECK(d.main_score > least);
      DOCTEST_CHECK(d.main_score <= 1.0);
    }
    DOCTEST_CHECK(r.splits[0].bm25.has_value() == (task == "reranking"));
    // The other types get the TF-IDF baseline, scored by the same protocol.
    DOCTEST_REQUIRE(r.splits[0].tfidf.has_value() == (task != "reranking"));
    if (task == "reranking") continue;
    DOCTEST_CHECK(r.splits[0].tfidf_features == (task == "bitext" ? "char-trigrams" : "words"));
    DOCTEST_CHECK(r.splits[0].tfidf_width > 10);
    DOCTEST_CHECK(r.splits[0].tfidf_main_score == metric_value(*r.splits[0].tfidf, load_task_spec(kExamples + "/" + task).main_score));
    DOCTEST_CHECK(r.splits[0].tfidf_main_score > least);
    DOCTEST_CHECK(r.splits[0].tfidf_main_score <= 1.0);
  }
  RunnerOptions no_baselines = o;
  no_baselines.bm25 = false;
  DOCTEST_CHECK(!run_task(load_task_spec(kExamples + "/sts"), enc, no_baselines).splits[0].tfidf.has_value());
  // Without instructions the texts reach the encoder unchanged.
  RunnerOptions plain = o;
  plain.use_instructions = false;
  run_task(load_task_spec(kExamples + "/clustering"), enc, plain);
  DOCTEST_CHECK(enc.last_texts_[0].rfind("Instruct:", 0) == std::string::npos);
  run_task(load_task_spec(kExamples + "/clustering"), enc, o);
  DOCTEST_CHECK(enc.last_texts_[0].rfind("Instruct: Identify the license of a sentence \n Query: ", 0) == 0);

  RunnerOptions bad = o;
  bad.dims = {65};
  DOCTEST_CHECK_THROWS_AS(run_task(load_task_spec(kExamples + "/sts"), enc, bad), kalm::UsageError);
}

DOCTEST_TEST_CASE("runners: same inputs, same scores; main_score must name a metric") {
  TrigramEncoder enc(32);
  RunnerOptions o;
  auto a = run_task(load_task_spec(kExamples + "/classification"), enc, o);
  auto b = run_task(load_task_spec(kExamples + "/classification"), enc, o);
  DOCTEST_CHECK(main_of(a) == main_of(b));
  auto c1 = run_task(load_task_spec(kExamples + "/clustering"), enc, o);
  auto c2 = run_task(load_task_spec(kExamples + "/clustering"), enc, o);
  DOCTEST_CHECK(main_of(c1) == main_of(c2));

  TempDir t;
  t.write("task.json", R"({"type": "bitext", "main_score": "ndcg_at_10"})");
  t.write("test.jsonl", "{\"sentence1\": \"hello there\", \"sentence2\": \"hallo da\"}\n");
  auto m = message_of([&] { run_task(load_task_spec(t.str()), enc, o); });
  DOCTEST_CHECK(m.find("main_score 'ndcg_at_10' is not a metric of this task (available: f1, precision") != std::string::npos);
}

DOCTEST_TEST_CASE("precomputed retrieval embeddings equal the model path") {
  TrigramEncoder enc(48);
  RunnerOptions o;
  auto spec = load_task_spec(kExamples + "/retrieval");
  auto with_model = run_task(spec, enc, o);
  auto data = load_retrieval(spec, "test");
  std::vector<std::string> q;
  const std::string prefix = "Instruct: " + spec.instruction + " \n Query: ";
  for (const auto& t : data.query_texts) q.push_back(prefix + t);
  auto qe = enc.encode(q, "q", prefix);
  auto ce = enc.encode(data.corpus_texts, "c", "");
  auto pre = run_retrieval_with_embeddings(spec, qe, ce, o);
  DOCTEST_CHECK(main_of(pre) == main_of(with_model));
  DOCTEST_CHECK(metric_value(pre.splits[0].dims[0].metrics, "map_at_100") ==
                metric_value(with_model.splits[0].dims[0].metrics, "map_at_100"));
  DOCTEST_CHECK_THROWS_AS(run_retrieval_with_embeddings(spec, qe.narrow(0, 0, 5), ce, o), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(run_retrieval_with_embeddings(spec, qe, ce.narrow(1, 0, 8), o), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(run_retrieval_with_embeddings(load_task_spec(kExamples + "/sts"), qe, ce, o), kalm::UsageError);
}

DOCTEST_TEST_CASE("results JSON and table") {
  TrigramEncoder enc(32);
  RunnerOptions o;
  o.dims = {32, 8};
  auto r = run_task(load_task_spec(kExamples + "/retrieval"), enc, o);
  auto json = task_result_json(r, {"models/tiny", "0.1.0 (git x)", "kalm-eval x"});
  for (const char* key : {"\"task_name\": \"LicenseRetrieval\"", "\"task_type\": \"retrieval\"", "\"model\": \"models/tiny\"",
                          "\"kalm_version\": \"0.1.0 (git x)\"", "\"dims\": [32, 8]", "\"evaluation_time\": ",
                          "\"main_metric\": \"ndcg_at_10\"", "\"split\": \"test\"", "\"languages\": [\"eng-Latn\"]",
                          "\"dim\": 32,", "\"dim\": 8,", "\"main_score\": ", "\"ndcg_at_10\": ", "\"bm25\": {"})
    DOCTEST_CHECK_MESSAGE(json.find(key) != std::string::npos, key);
  DOCTEST_CHECK(json.find("\"tfidf\": {") == std::string::npos);
  auto sts = run_task(load_task_spec(kExamples + "/sts"), enc, o);
  const auto sts_json = task_result_json(sts, {"models/tiny", "0.1.0 (git x)", "kalm-eval x", std::nullopt});
  for (const char* key : {"\"tfidf\": {", "\"features\": \"words\"", "\"width\": ", "\"cosine_spearman\": "})
    DOCTEST_CHECK_MESSAGE(sts_json.find(key) != std::string::npos, key);
  const auto both = results_table({r, sts});
  const auto header = both.substr(0, both.find('\n'));
  DOCTEST_CHECK(header.find("bm25") != std::string::npos);
  DOCTEST_CHECK(header.find("tfidf") > header.find("bm25"));
  DOCTEST_CHECK(header.find("tfidf") != std::string::npos);
  auto table = results_table({r});
  DOCTEST_CHECK(table.rfind("task", 0) == 0);
  DOCTEST_CHECK(table.find("dim=32") != std::string::npos);
  DOCTEST_CHECK(table.find("dim=8") != std::string::npos);
  DOCTEST_CHECK(table.find("bm25") != std::string::npos);
  DOCTEST_CHECK(table.find("LicenseRetrieval  retrieval  test   ndcg_at_10") != std::string::npos);
  char expected[32];
  std::snprintf(expected, sizeof expected, "%.2f", 100 * r.splits[0].dims[0].main_score);
  DOCTEST_CHECK(table.find(expected) != std::string::npos);
}

DOCTEST_TEST_CASE("runners: a classification or clustering task with one label is refused, not scored 100") {
  TrigramEncoder enc(32);
  RunnerOptions o;
  TempDir t;
  t.write("task.json", R"({"type": "classification", "n_experiments": 1, "samples_per_label": 2})");
  t.write("train.jsonl", "{\"text\": \"a b\", \"label\": \"x\"}\n{\"text\": \"c d\", \"label\": \"x\"}\n");
  t.write("test.jsonl", "{\"text\": \"a d\", \"label\": \"x\"}\n");
  DOCTEST_CHECK_THROWS_WITH_AS(run_task(load_task_spec(t.str()), enc, o),
                               (t.str() + "/train.jsonl: every text has the same label; classification needs at least "
                                          "two labels (a single one would score 100 whatever the model)").c_str(),
                               kalm::FormatError);
  TempDir c;
  c.write("task.json", R"({"type": "clustering"})");
  c.write("test.jsonl", "{\"text\": \"a b\", \"label\": \"x\"}\n{\"text\": \"c d\", \"label\": \"x\"}\n");
  DOCTEST_CHECK_THROWS_WITH_AS(run_task(load_task_spec(c.str()), enc, o),
                               (c.str() + "/test.jsonl: every text has the same label; clustering needs at least "
                                          "two labels (a single one would score 100 whatever the model)").c_str(),
                               kalm::FormatError);
}
