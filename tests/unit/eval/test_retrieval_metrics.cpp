// Retrieval measures against NIST trec_eval 9.0.8 (full-precision output) and
// mteb's MRR@k; fixtures and their generator in tests/fixtures/eval/trec/.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "kalm/error.h"
#include "kalm/eval/retrieval_metrics.h"
#include "kalm/eval/trec_files.h"
#include "kalm/io/remove_tree.h"
#include "kalm/io/zstd_stream.h"

namespace {

using kalm::eval::Qrels;
using kalm::eval::Run;

const std::string kDir = std::string(KALM_FIXTURES_DIR) + "/eval/trec/";

// (measure, qid) -> value, from trec_eval -q output or a .mrr file. Non-numeric
// values (runid, relstring) are skipped; repeated lines must agree.
std::map<std::pair<std::string, std::string>, double> read_expected(const std::string& path) {
  std::ifstream in(path);
  DOCTEST_REQUIRE_MESSAGE(in.good(), path);
  std::map<std::pair<std::string, std::string>, double> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string measure, qid, value;
    fields >> measure >> qid >> value;
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0') continue;
    auto [it, fresh] = out.emplace(std::make_pair(measure, qid), v);
    if (!fresh) DOCTEST_REQUIRE(it->second == v);
  }
  return out;
}

void check_against_oracle(const std::string& name, const std::string& suffix, std::int64_t level) {
  const Qrels qrels = kalm::eval::read_qrels(kDir + name + ".qrels");
  const Run run = kalm::eval::read_run(kDir + name + ".run");
  kalm::eval::RetrievalOptions options;
  options.relevance_level = level;
  const auto ev = kalm::eval::evaluate_retrieval(qrels, run, options);
  auto expected = read_expected(kDir + name + suffix + ".expected");
  for (const auto& [key, v] : read_expected(kDir + name + suffix + ".mrr")) expected[key] = v;

  // The same queries as trec_eval evaluated.
  std::set<std::string> oracle_queries;
  for (const auto& [key, v] : expected)
    if (key.second != "all") oracle_queries.insert(key.second);
  DOCTEST_CHECK(std::set<std::string>(ev.query_ids.begin(), ev.query_ids.end()) == oracle_queries);
  DOCTEST_CHECK(expected.at({"num_q", "all"}) == static_cast<double>(ev.query_ids.size()));

  std::size_t compared = 0;
  for (std::size_t m = 0; m < ev.measures.size(); ++m) {
    const std::string& measure = ev.measures[m];
    for (std::size_t q = 0; q < ev.query_ids.size(); ++q) {
      auto it = expected.find({measure, ev.query_ids[q]});
      DOCTEST_REQUIRE_MESSAGE(it != expected.end(), measure << " " << ev.query_ids[q]);
      DOCTEST_CHECK_MESSAGE(std::abs(ev.values[q][m] - it->second) <= 1e-9,
                            name << suffix << " " << measure << " " << ev.query_ids[q] << ": "
                                 << ev.values[q][m] << " vs " << it->second);
      ++compared;
    }
    auto it = expected.find({measure, "all"});
    DOCTEST_REQUIRE_MESSAGE(it != expected.end(), measure << " all");
    DOCTEST_CHECK_MESSAGE(std::abs(ev.means[m] - it->second) <= 1e-9,
                          name << suffix << " " << measure << " all: " << ev.means[m] << " vs "
                               << it->second);
    ++compared;
  }
  DOCTEST_CHECK(compared == ev.measures.size() * (ev.query_ids.size() + 1));
}

std::vector<double> one_query(const std::unordered_map<std::string, std::int64_t>& judged,
                              const std::vector<std::pair<std::string, double>>& docs) {
  return kalm::eval::evaluate_query(judged, docs);
}

double measure(const std::vector<double>& values, const std::string& name) {
  const auto names = kalm::eval::retrieval_measure_names();
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return values[i];
  DOCTEST_FAIL("no measure " << name);
  return 0;
}

}  // namespace

DOCTEST_TEST_CASE("retrieval measures equal trec_eval 9.0.8 and mteb MRR, per query and mean") {
  DOCTEST_SUBCASE("graded relevance, ties, missing queries, short runs") { check_against_oracle("basic", "", 1); }
  DOCTEST_SUBCASE("relevance level 2") { check_against_oracle("basic", ".l2", 2); }
  DOCTEST_SUBCASE("all-equal scores, float32 collisions, signed zero") { check_against_oracle("ties", "", 1); }
  DOCTEST_SUBCASE("12 queries up to 1100 docs, coarse scores") { check_against_oracle("large", "", 1); }
}

DOCTEST_TEST_CASE("tied scores rank by document id descending, as byte strings") {
  // "9" > "10" as strings: with equal scores, "9" is ranked first.
  auto v = one_query({{"9", 1}}, {{"10", 1.0}, {"9", 1.0}});
  DOCTEST_CHECK(measure(v, "recip_rank") == 1.0);
  v = one_query({{"10", 1}}, {{"10", 1.0}, {"9", 1.0}});
  DOCTEST_CHECK(measure(v, "recip_rank") == 0.5);
  // "b" > "a" > "B".
  v = one_query({{"B", 1}}, {{"a", 2.0}, {"B", 2.0}, {"b", 2.0}});
  DOCTEST_CHECK(measure(v, "recip_rank") == doctest::Approx(1.0 / 3));
  // The rank is decided by score first.
  v = one_query({{"a", 1}}, {{"a", 2.5}, {"b", 2.0}});
  DOCTEST_CHECK(measure(v, "recip_rank") == 1.0);
}

DOCTEST_TEST_CASE("hand-computed nDCG, MAP, P, recall and mteb MRR on one query") {
  // Ranking: d1 (rel 0), d2 (rel 2), d3 (not judged), d4 (rel 1); d5 (rel 3) not retrieved.
  std::unordered_map<std::string, std::int64_t> judged = {{"d1", 0}, {"d2", 2}, {"d4", 1}, {"d5", 3}};
  auto v = one_query(judged, {{"d1", 4}, {"d2", 3}, {"d3", 2}, {"d4", 1}});
  const double dcg3 = 2 / std::log2(3.0);
  const double dcg10 = dcg3 + 1 / std::log2(5.0);
  const double ideal3 = 3 + 2 / std::log2(3.0) + 1 / std::log2(4.0);
  DOCTEST_CHECK(measure(v, "ndcg_cut_1") == 0.0);
  DOCTEST_CHECK(measure(v, "ndcg_cut_3") == doctest::Approx(dcg3 / ideal3).epsilon(1e-12));
  DOCTEST_CHECK(measure(v, "ndcg_cut_10") == doctest::Approx(dcg10 / ideal3).epsilon(1e-12));
  DOCTEST_CHECK(measure(v, "map") == doctest::Approx((1.0 / 2 + 2.0 / 4) / 3).epsilon(1e-12));
  DOCTEST_CHECK(measure(v, "map_cut_3") == doctest::Approx((1.0 / 2) / 3).epsilon(1e-12));
  DOCTEST_CHECK(measure(v, "P_3") == doctest::Approx(1.0 / 3).epsilon(1e-12));
  DOCTEST_CHECK(measure(v, "P_10") == doctest::Approx(0.2).epsilon(1e-12));  // padded to 10
  DOCTEST_CHECK(measure(v, "recall_3") == doctest::Approx(1.0 / 3).epsilon(1e-12));
  DOCTEST_CHECK(measure(v, "recall_1000") == doctest::Approx(2.0 / 3).epsilon(1e-12));
  DOCTEST_CHECK(measure(v, "recip_rank") == 0.5);
  DOCTEST_CHECK(measure(v, "success_1") == 0.0);
  DOCTEST_CHECK(measure(v, "success_3") == 1.0);
  DOCTEST_CHECK(measure(v, "mrr_at_1") == 0.0);
  DOCTEST_CHECK(measure(v, "mrr_at_3") == 0.5);
  DOCTEST_CHECK(measure(v, "num_ret") == 4);
  DOCTEST_CHECK(measure(v, "num_rel") == 3);
  DOCTEST_CHECK(measure(v, "num_rel_ret") == 2);
}

DOCTEST_TEST_CASE("queries only in the run or only in the qrels are skipped and counted") {
  Qrels qrels = {{"a", {{"x", 1}}}, {"b", {{"y", 1}}}};
  Run run = {{"a", {{"x", 1.0}}}, {"c", {{"x", 1.0}}}};
  auto ev = kalm::eval::evaluate_retrieval(qrels, run);
  DOCTEST_CHECK(ev.query_ids == std::vector<std::string>{"a"});
  DOCTEST_CHECK(ev.skipped_run_queries == 1);
  DOCTEST_CHECK(ev.skipped_qrels_queries == 1);
  DOCTEST_CHECK(ev.mean("map") == 1.0);
  DOCTEST_CHECK(ev.value("a", "ndcg_cut_10") == 1.0);
  DOCTEST_CHECK_THROWS_AS(ev.value("c", "map"), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(ev.mean("bogus"), kalm::UsageError);

  Run disjoint = {{"c", {{"x", 1.0}}}};
  DOCTEST_CHECK_THROWS_AS(kalm::eval::evaluate_retrieval(qrels, disjoint), kalm::FormatError);
}

DOCTEST_TEST_CASE("bad options and bad scores are refused") {
  Qrels qrels = {{"a", {{"x", 1}}}};
  Run run = {{"a", {{"x", 1.0}}}};
  kalm::eval::RetrievalOptions o;
  o.cutoffs = {10, 0};
  DOCTEST_CHECK_THROWS_AS(kalm::eval::evaluate_retrieval(qrels, run, o), kalm::UsageError);
  o.cutoffs = {10, 10};
  DOCTEST_CHECK_THROWS_AS(kalm::eval::evaluate_retrieval(qrels, run, o), kalm::UsageError);
  o = {};
  o.relevance_level = 0;
  DOCTEST_CHECK_THROWS_AS(kalm::eval::evaluate_retrieval(qrels, run, o), kalm::UsageError);
  Run nan_run = {{"a", {{"x", std::nan("")}}}};
  DOCTEST_CHECK_THROWS_AS(kalm::eval::evaluate_retrieval(qrels, nan_run), kalm::FormatError);
  DOCTEST_CHECK_THROWS_AS(one_query({}, {{"x", 1.0}, {"x", 2.0}}), kalm::FormatError);
  // Custom cutoffs give custom names, sorted.
  o = {};
  o.cutoffs = {7, 2};
  o.mrr_cutoffs = {4};
  auto ev = kalm::eval::evaluate_retrieval(qrels, run, o);
  DOCTEST_CHECK(ev.mean("P_2") == 0.5);
  DOCTEST_CHECK(ev.mean("ndcg_cut_7") == 1.0);
  DOCTEST_CHECK(ev.mean("mrr_at_4") == 1.0);
  DOCTEST_CHECK_THROWS_AS(ev.mean("P_10"), kalm::UsageError);
}

DOCTEST_TEST_CASE("TREC file readers name file and line on bad input") {
  auto message = [](auto fn) {
    try {
      fn();
    } catch (const kalm::FormatError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  using kalm::eval::parse_qrels;
  using kalm::eval::parse_run;
  DOCTEST_CHECK(message([] { parse_qrels("q 0 d 1\nq 0 e\n", "x.qrels"); }).find("x.qrels:2") == 0);
  DOCTEST_CHECK(message([] { parse_qrels("q 0 d 1 extra\n", "x.qrels"); }).find("x.qrels:1") == 0);
  DOCTEST_CHECK(message([] { parse_qrels("q 0 d 1.5\n", "x.qrels"); }).find("not an integer") != std::string::npos);
  DOCTEST_CHECK(message([] { parse_qrels("q 0 d 1\n\nq 0 d 2\n", "x.qrels"); }) ==
                "x.qrels:3: query 'q', document 'd' judged twice (first at line 1)");
  DOCTEST_CHECK(message([] { parse_run("q Q0 d 1 0.5\n", "r.run"); }).find("r.run:1") == 0);
  DOCTEST_CHECK(message([] { parse_run("q Q0 d 1 abc t\n", "r.run"); }).find("not a finite number") !=
                std::string::npos);
  DOCTEST_CHECK(message([] { parse_run("q Q0 d 1 nan t\n", "r.run"); }).find("r.run:1") == 0);
  DOCTEST_CHECK(message([] { parse_run("q Q0 d 1 inf t\n", "r.run"); }).find("r.run:1") == 0);
  DOCTEST_CHECK(message([] { parse_run("q Q0 d 1 1 t\nq Q0 d 2 1 t\n", "-"); }) ==
                "<stdin>:2: query 'q', document 'd' retrieved twice (first at line 1)");
  DOCTEST_CHECK_THROWS_AS(kalm::eval::read_qrels(kDir + "does-not-exist.qrels"), kalm::IoError);

  // Comments, blank lines, CRLF, tabs and extra run fields are accepted.
  auto q = parse_qrels("# header\r\nq1\t0\td1\t2\r\n\n  q1 0 d2 -1\n", "x");
  DOCTEST_CHECK(q.at("q1").at("d1") == 2);
  DOCTEST_CHECK(q.at("q1").at("d2") == -1);
  auto r = parse_run("q1 Q0 d1 1 -2.5e-3 tag extra fields\n", "x");
  DOCTEST_CHECK(r.at("q1").at("d1") == -2.5e-3);
  DOCTEST_CHECK(parse_run("", "x").empty());
}

DOCTEST_TEST_CASE("zstd-compressed qrels and runs read the same as plain ones") {
  std::string dir = (std::filesystem::temp_directory_path() / "kalm-eval-test.XXXXXX").string();
  DOCTEST_REQUIRE(::mkdtemp(dir.data()) != nullptr);
  auto copy_zst = [&](const std::string& name) {
    std::ifstream in(kDir + name);
    std::stringstream ss;
    ss << in.rdbuf();
    kalm::io::OutputStream out(dir + "/" + name + ".zst");
    out.write(ss.str());
    out.finish();
    return dir + "/" + name + ".zst";
  };
  const std::string qrels_zst = copy_zst("basic.qrels"), run_zst = copy_zst("basic.run");
  const bool same_qrels = kalm::eval::read_qrels(qrels_zst) == kalm::eval::read_qrels(kDir + "basic.qrels");
  const bool same_run = kalm::eval::read_run(run_zst) == kalm::eval::read_run(kDir + "basic.run");
  DOCTEST_CHECK(same_qrels);
  DOCTEST_CHECK(same_run);
  DOCTEST_CHECK(kalm::eval::evaluate_trec_files(qrels_zst, run_zst, true) ==
                kalm::eval::evaluate_trec_files(kDir + "basic.qrels", kDir + "basic.run", true));
  kalm::io::remove_tree_nothrow(std::filesystem::path(dir).string());
}

DOCTEST_TEST_CASE("JSON report: trec_eval names, means under all, per-query objects") {
  const std::string json = kalm::eval::evaluate_trec_files(kDir + "basic.qrels", kDir + "basic.run", true);
  const auto ev = kalm::eval::evaluate_retrieval(kalm::eval::read_qrels(kDir + "basic.qrels"),
                                                 kalm::eval::read_run(kDir + "basic.run"));
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(json);
  DOCTEST_CHECK(int64_t(doc["all"]["num_q"]) == 4);
  for (const char* name : {"map", "ndcg_cut_10", "map_cut_10", "recip_rank", "recall_100", "P_10", "mrr_at_10"}) {
    DOCTEST_CHECK(double(doc["all"][name]) == ev.mean(name));
    DOCTEST_CHECK(double(doc["q1"][name]) == ev.value("q1", name));
  }
  DOCTEST_CHECK(int64_t(doc["q1"]["num_ret"]) == 9);
  DOCTEST_CHECK(doc["q4"].error() == simdjson::NO_SUCH_FIELD);  // not in the qrels

  const std::string summary = kalm::eval::evaluate_trec_files(kDir + "basic.qrels", kDir + "basic.run", false);
  simdjson::dom::parser parser2;
  simdjson::dom::object top = parser2.parse(summary);
  DOCTEST_CHECK(top.size() == 1);
  DOCTEST_CHECK(summary.back() == '\n');

  Qrels qrels = {{"all", {{"x", 1}}}};
  Run run = {{"all", {{"x", 1.0}}}};
  auto clash = kalm::eval::evaluate_retrieval(qrels, run);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::retrieval_report_json(clash, true), kalm::FormatError);
  DOCTEST_CHECK(kalm::eval::retrieval_report_json(clash, false).find("\"all\"") != std::string::npos);
  DOCTEST_CHECK_THROWS_AS(kalm::eval::evaluate_trec_files("-", "-", false), kalm::UsageError);
}

DOCTEST_TEST_CASE("a 100k-document run is evaluated exactly") {
  // Not timed; a guard that big runs work and keep the tie rule.
  Qrels qrels;
  Run run;
  std::vector<std::string> top;  // the docs tied at the top score 996
  for (int d = 0; d < 100000; ++d)
    if (d % 997 == 996) top.push_back("d" + std::to_string(d));
  std::sort(top.begin(), top.end());
  for (int q = 0; q < 2; ++q) {
    auto& docs = run["q" + std::to_string(q)];
    for (int d = 0; d < 100000; ++d) docs.emplace("d" + std::to_string(d), static_cast<double>(d % 997));
  }
  qrels["q0"].emplace(top.back(), 1);   // largest id of the tie: rank 1
  qrels["q1"].emplace(top.front(), 1);  // smallest id of the tie: last of the tie
  auto ev = kalm::eval::evaluate_retrieval(qrels, run);
  DOCTEST_CHECK(ev.value("q0", "recip_rank") == 1.0);
  DOCTEST_CHECK(ev.value("q1", "recip_rank") == 1.0 / static_cast<double>(top.size()));
  DOCTEST_CHECK(ev.value("q1", "mrr_at_100") == 1.0 / static_cast<double>(top.size()));
  DOCTEST_CHECK(ev.mean("num_ret") == 200000);
}
