#include <doctest/doctest.h>

#include <iostream>
#include <sstream>

#include <vector>

#include "kalm/cli/progress.h"
#include "kalm/cli/tool.h"
#include "kalm/error.h"

namespace {
// Runs a Tool on the given arguments (argv[0] prepended).
int run_tool(std::vector<std::string> args, const std::function<void()>& body,
             kalm::cli::Tool* out = nullptr) {
  kalm::cli::Tool tool("kalm-test", "test tool");
  int value = 0;
  tool.app().add_option("--value", value, "a value");
  args.insert(args.begin(), "kalm-test");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return tool.run(static_cast<int>(argv.size()), argv.data(), body);
}
}  // namespace

DOCTEST_TEST_CASE("Tool::run maps outcomes onto exit codes") {
  DOCTEST_CHECK(run_tool({}, [] {}) == 0);
  DOCTEST_CHECK(run_tool({"--help"}, [] { throw std::runtime_error("body must not run"); }) == 0);
  DOCTEST_CHECK(run_tool({"--version"}, [] { throw std::runtime_error("body must not run"); }) == 0);
  DOCTEST_CHECK(run_tool({"--bogus"}, [] {}) == 2);
  DOCTEST_CHECK(run_tool({"--value", "x"}, [] {}) == 2);
  DOCTEST_CHECK(run_tool({}, [] { throw kalm::UsageError("bad combination"); }) == 2);
  DOCTEST_CHECK(run_tool({}, [] { throw kalm::FormatError("in.jsonl:3: invalid JSON"); }) == 1);
  DOCTEST_CHECK(run_tool({}, [] { throw kalm::IoError("x: cannot open"); }) == 1);
  DOCTEST_CHECK(run_tool({}, [] { throw std::runtime_error("anything"); }) == 1);
  DOCTEST_CHECK(run_tool({}, [] { throw std::bad_alloc(); }) == 1);
}

DOCTEST_TEST_CASE("shared flags parse into CommonOptions") {
  kalm::cli::Tool tool("kalm-test", "test tool");
  std::vector<std::string> args = {"kalm-test", "--threads", "1", "--seed", "99", "-q"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  bool ran = false;
  DOCTEST_CHECK(tool.run(static_cast<int>(argv.size()), argv.data(), [&] { ran = true; }) == 0);
  DOCTEST_CHECK(ran);
  DOCTEST_CHECK(tool.common().threads.value() == 1);
  DOCTEST_CHECK(tool.common().resolved_threads() == 1);
  DOCTEST_CHECK(tool.common().seed == 99);
  DOCTEST_CHECK(tool.common().quiet);
  DOCTEST_CHECK(tool.command_line() == "kalm-test --threads 1 --seed 99 -q");
}

DOCTEST_TEST_CASE("--threads above the CPUs this process may use, or not positive, is a usage error with a short message") {
  const int cores = kalm::cli::available_cores();
  DOCTEST_CHECK(cores >= 1);
  for (const std::string& value : {std::to_string(cores + 1), std::string("0"), std::string("-1e300"),
                                   std::string("1e300"), std::string("lots")}) {
    DOCTEST_CAPTURE(value);
    kalm::cli::Tool tool("kalm-test", "test tool");
    std::vector<std::string> args = {"kalm-test", "--threads", value};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    bool ran = false;
    std::ostringstream err;
    auto* old = std::cerr.rdbuf(err.rdbuf());
    const int rc = tool.run(static_cast<int>(argv.size()), argv.data(), [&] { ran = true; });
    std::cerr.rdbuf(old);
    DOCTEST_CHECK(rc == 2);
    DOCTEST_CHECK_FALSE(ran);
    const std::string first_line = err.str().substr(0, err.str().find('\n'));
    DOCTEST_CHECK(first_line.size() < 200);  // never the 309 digits of DBL_MAX
    if (value == std::to_string(cores + 1))
      DOCTEST_CHECK(first_line == "kalm-test: error: --threads " + value + " is more than the " + std::to_string(cores) +
                                      " CPUs this process may use (nproc); more threads than CPUs only slow kalm down");
    if (value == "0") DOCTEST_CHECK(first_line == "kalm-test: error: --threads: must be positive, not 0");
  }
}

DOCTEST_TEST_CASE("resolved_threads defaults to all cores") {
  kalm::cli::CommonOptions common;
  DOCTEST_CHECK(common.resolved_threads() >= 1);
}

DOCTEST_TEST_CASE("quote_command_line quotes what a shell would split") {
  std::vector<std::string> args = {"kalm-embed", "--instruction", "Given a query, it's", "-o", "x.safetensors"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  DOCTEST_CHECK(kalm::cli::quote_command_line(5, argv.data()) ==
                "kalm-embed --instruction 'Given a query, it'\\''s' -o x.safetensors");
}

DOCTEST_TEST_CASE("version text names kalm, the git revision and LibTorch") {
  auto text = kalm::cli::Tool::version_text("kalm-x");
  DOCTEST_CHECK(text.rfind("kalm-x (kalm) ", 0) == 0);
  DOCTEST_CHECK(text.find("git ") != std::string::npos);
  DOCTEST_CHECK(text.find("LibTorch ") != std::string::npos);
}

DOCTEST_TEST_CASE("progress formatting") {
  DOCTEST_CHECK(kalm::cli::format_seconds(1.25) == "1.2 s");
  DOCTEST_CHECK(kalm::cli::format_seconds(125) == "2 min 05 s");
  DOCTEST_CHECK(kalm::cli::format_seconds(7260) == "2 h 01 min");
  DOCTEST_CHECK(kalm::cli::format_rate(12.34) == "12.3");
  DOCTEST_CHECK(kalm::cli::format_rate(12345) == "12.3k");
  DOCTEST_CHECK(kalm::cli::format_rate(2.5e6) == "2.50M");
  kalm::cli::Progress progress("kalm-test", "texts", 10, /*quiet=*/true);
  progress.advance(4);
  progress.advance();
  DOCTEST_CHECK(progress.count() == 5);
  DOCTEST_CHECK(!progress.interactive());
}

DOCTEST_TEST_CASE("error context helpers") {
  DOCTEST_CHECK(kalm::where("a.jsonl", 12) == "a.jsonl:12");
  DOCTEST_CHECK(kalm::where("-", 3) == "<stdin>:3");
  DOCTEST_CHECK_THROWS_AS(([] { KALM_ASSERT(1 == 2, "math"); })(), kalm::InternalError);
}

DOCTEST_TEST_CASE("dump_config writes only what reads back as given") {
  kalm::cli::Tool tool("kalm-test", "test tool");
  bool bm25 = true;
  std::string name = "x y";
  std::string templ = "a\nb";
  std::vector<std::string> files;
  tool.app().add_flag("--bm25,!--no-bm25", bm25, "flag");
  tool.app().add_option("--name", name, "a string");
  tool.app().add_option("--template", templ, "multi-line");
  tool.app().add_option("--files", files, "many");
  std::vector<std::string> args = {"kalm-test", "--no-bm25", "--files", "a", "b", "--seed", "7"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  DOCTEST_REQUIRE(tool.run(static_cast<int>(argv.size()), argv.data(), [] {}) == 0);
  const std::string dump = kalm::cli::dump_config(tool.app());
  DOCTEST_CHECK(dump.find("bm25=false\n") != std::string::npos);
  DOCTEST_CHECK(dump.find("seed=7\n") != std::string::npos);
  DOCTEST_CHECK(dump.find("name=\"x y\"\n") != std::string::npos);
  DOCTEST_CHECK(dump.find("files=[\"a\",\"b\"]\n") != std::string::npos);
  DOCTEST_CHECK(dump.find("# template:") != std::string::npos);
  DOCTEST_CHECK(dump.find("threads") == std::string::npos);  // unset: left out
  DOCTEST_CHECK(dump.find("quiet") == std::string::npos);    // flag not given: left out
}
