// kalm::core::ProfileWindow (--profile): a Chrome trace of exactly the
// window's units, written atomically; the range and per-rank names.
#include <doctest/doctest.h>

#include <simdjson.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "kalm/core/profile.h"
#include "kalm/error.h"
#include "kalm/io/remove_tree.h"

namespace fs = std::filesystem;
using kalm::core::ProfileRange;
using kalm::core::ProfileWindow;

namespace {

struct TempDir {
  TempDir() {
    std::string t = (fs::temp_directory_path() / "kalm-test-profile-XXXXXX").string();
    path = mkdtemp(t.data());
  }
  ~TempDir() { kalm::io::remove_tree_nothrow(path.string()); }
  fs::path path;
};

// The names of the trace's events, after checking that it parses as a Chrome
// trace (one object with a "traceEvents" array).
std::multiset<std::string> event_names(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(text);
  std::multiset<std::string> names;
  for (simdjson::dom::element event : doc["traceEvents"].get_array()) {
    std::string_view name;
    if (event["name"].get(name) == simdjson::SUCCESS) names.insert(std::string(name));
  }
  return names;
}

// Unit u runs an operator of its own, so the trace shows which units it holds.
void run_unit(std::int64_t u) {
  const torch::Tensor x = torch::randn({64, 64});
  switch (u) {
    case 1: (void)torch::relu(x); break;
    case 2: (void)torch::mm(x, x); break;
    case 3: (void)torch::tanh(x); break;
    default: (void)torch::sigmoid(x); break;
  }
}

std::set<std::string> files_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

}  // namespace

DOCTEST_TEST_CASE("parse_profile_range: FIRST:LAST or FIRST, 1-based and inclusive") {
  const ProfileRange a = kalm::core::parse_profile_range("3:5", "--profile-steps");
  DOCTEST_CHECK(a.first == 3);
  DOCTEST_CHECK(a.last == 5);
  const ProfileRange b = kalm::core::parse_profile_range("7", "--profile-steps");
  DOCTEST_CHECK(b.first == 7);
  DOCTEST_CHECK(b.last == 7);
  for (const char* bad : {"", "0", "0:2", "5:3", "a", "3:", ":3", "-1", "1:2:3", "2:x", "1 :2", "99999999999999"}) {
    DOCTEST_CAPTURE(bad);
    DOCTEST_CHECK_THROWS_WITH_AS(kalm::core::parse_profile_range(bad, "--profile-batches"),
                                 doctest::Contains("--profile-batches"), kalm::UsageError);
  }
}

DOCTEST_TEST_CASE("profile_path_for_rank: .rankN before .json") {
  DOCTEST_CHECK(kalm::core::profile_path_for_rank("runs/t.json", 1) == "runs/t.rank1.json");
  DOCTEST_CHECK(kalm::core::profile_path_for_rank("trace", 0) == "trace.rank0");
  DOCTEST_CHECK(kalm::core::profile_path_for_rank(".json", 3) == ".json.rank3");
}

DOCTEST_TEST_CASE("ProfileWindow: the trace holds the window's units and nothing before or after") {
  TempDir dir;
  const fs::path out = dir.path / "trace.json";
  ProfileWindow window(out.string(), {2, 3}, torch::Device(torch::kCPU));
  for (std::int64_t u = 1; u <= 4; ++u) {
    window.begin(u);
    DOCTEST_CHECK(window.recording() == (u == 2 || u == 3));
    run_unit(u);
    window.end(u);
  }
  DOCTEST_CHECK(window.written());
  DOCTEST_CHECK(window.units_recorded() == 2);
  DOCTEST_CHECK(window.finish());  // nothing left to stop
  const auto names = event_names(out);
  DOCTEST_CHECK(names.count("ProfilerStep#2") == 1);
  DOCTEST_CHECK(names.count("ProfilerStep#3") == 1);
  DOCTEST_CHECK(names.count("ProfilerStep#1") == 0);
  DOCTEST_CHECK(names.count("ProfilerStep#4") == 0);
  DOCTEST_CHECK(names.count("aten::mm") >= 1);    // unit 2
  DOCTEST_CHECK(names.count("aten::tanh") >= 1);  // unit 3
  DOCTEST_CHECK(names.count("aten::relu") == 0);  // unit 1, before the window
  DOCTEST_CHECK(names.count("aten::sigmoid") == 0);  // unit 4, after it
  DOCTEST_CHECK(files_in(dir.path) == std::set<std::string>{"trace.json"});  // no temporary left
}

DOCTEST_TEST_CASE("ProfileWindow: a run that ends inside the window, before it, or by an exception") {
  TempDir dir;
  {
    // Ends inside: finish() writes the units that ran.
    const fs::path out = dir.path / "inside.json";
    ProfileWindow window(out.string(), {2, 9}, torch::Device(torch::kCPU));
    for (std::int64_t u = 1; u <= 3; ++u) {
      window.begin(u);
      run_unit(u);
      window.end(u);
    }
    DOCTEST_CHECK_FALSE(window.written());
    DOCTEST_CHECK(window.recording());
    DOCTEST_CHECK(window.finish());
    DOCTEST_CHECK(window.units_recorded() == 2);
    const auto names = event_names(out);
    DOCTEST_CHECK(names.count("ProfilerStep#2") == 1);
    DOCTEST_CHECK(names.count("ProfilerStep#3") == 1);
    DOCTEST_CHECK(names.count("aten::relu") == 0);
  }
  {
    // Ends before: nothing written, no file left.
    ProfileWindow window((dir.path / "never.json").string(), {5, 6}, torch::Device(torch::kCPU));
    for (std::int64_t u = 1; u <= 2; ++u) {
      window.begin(u);
      run_unit(u);
      window.end(u);
    }
    DOCTEST_CHECK_FALSE(window.finish());
  }
  DOCTEST_CHECK_FALSE(fs::exists(dir.path / "never.json"));
  {
    // Destroyed while recording (an exception unwinding the run): no file,
    // and the profiler is off again, so a later window records.
    ProfileWindow window((dir.path / "unwound.json").string(), {1, 3}, torch::Device(torch::kCPU));
    window.begin(1);
    run_unit(1);
    DOCTEST_CHECK(window.recording());
  }
  DOCTEST_CHECK_FALSE(fs::exists(dir.path / "unwound.json"));
  const fs::path again = dir.path / "again.json";
  ProfileWindow window(again.string(), {1, 1}, torch::Device(torch::kCPU));
  window.begin(1);
  run_unit(2);
  window.end(1);
  DOCTEST_CHECK(window.written());
  DOCTEST_CHECK(event_names(again).count("aten::mm") >= 1);
  DOCTEST_CHECK(files_in(dir.path) == std::set<std::string>{"again.json", "inside.json"});
}

DOCTEST_TEST_CASE("ProfileWindow: an unwritable place or stdout is refused before anything runs") {
  DOCTEST_CHECK_THROWS_AS(ProfileWindow("/nonexistent-kalm-dir/t.json", {1, 1}, torch::Device(torch::kCPU)),
                          kalm::IoError);
  DOCTEST_CHECK_THROWS_AS(ProfileWindow("-", {1, 1}, torch::Device(torch::kCPU)), kalm::UsageError);
}
