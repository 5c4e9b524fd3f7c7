#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kalm/error.h"
#include "kalm/io/atomic_file.h"
#include "kalm/io/remove_tree.h"

namespace fs = std::filesystem;

namespace {
fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("kalm_atomic_" + name + "_" + std::to_string(::getpid()));
  kalm::io::remove_tree_nothrow(std::filesystem::path(dir).string());
  fs::create_directories(dir);
  return dir;
}
std::size_t entries(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}
std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

DOCTEST_TEST_CASE("a committed file appears whole under its name") {
  auto dir = fresh_dir("commit");
  auto target = dir / "out.txt";
  {
    kalm::io::AtomicOutputFile out(target.string());
    out.write("hello ", 6);
    DOCTEST_CHECK(!fs::exists(target));  // invisible until commit
    DOCTEST_CHECK(entries(dir) == 1);     // only the hidden temporary
    out.write("world\n", 6);
    out.commit();
    out.commit();  // idempotent
  }
  DOCTEST_CHECK(slurp(target) == "hello world\n");
  DOCTEST_CHECK(entries(dir) == 1);
  kalm::io::remove_tree_nothrow(std::filesystem::path(dir).string());
}

DOCTEST_TEST_CASE("an uncommitted file leaves nothing behind, and an old output survives") {
  auto dir = fresh_dir("abort");
  auto target = dir / "out.txt";
  { std::ofstream(target) << "previous complete output\n"; }
  try {
    kalm::io::AtomicOutputFile out(target.string());
    out.write("partial", 7);
    throw kalm::FormatError("input broke mid-way");
  } catch (const kalm::FormatError&) {
  }
  DOCTEST_CHECK(slurp(target) == "previous complete output\n");
  DOCTEST_CHECK(entries(dir) == 1);
  kalm::io::remove_tree_nothrow(std::filesystem::path(dir).string());
}

DOCTEST_TEST_CASE("an output in a missing directory is an IoError naming the path") {
  try {
    kalm::io::AtomicOutputFile out("/nonexistent-kalm-dir/x/out.txt");
    DOCTEST_FAIL("expected IoError");
  } catch (const kalm::IoError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("/nonexistent-kalm-dir/x/out.txt") != std::string::npos);
  }
}

DOCTEST_TEST_CASE("SIGTERM removes pending temporaries") {
  auto dir = fresh_dir("signal");
  auto target = dir / "out.txt";
  pid_t child = ::fork();
  DOCTEST_REQUIRE(child >= 0);
  if (child == 0) {
    ::signal(SIGTERM, SIG_DFL);  // the test framework's own handler would report a crash
    kalm::io::AtomicOutputFile out(target.string());
    out.write("partial", 7);
    ::raise(SIGTERM);
    ::_exit(0);  // not reached
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  DOCTEST_CHECK(WIFSIGNALED(status));
  DOCTEST_CHECK(WTERMSIG(status) == SIGTERM);
  DOCTEST_CHECK(entries(dir) == 0);
  kalm::io::remove_tree_nothrow(std::filesystem::path(dir).string());
}

DOCTEST_TEST_CASE("'-' and empty names mean stdout") {
  DOCTEST_CHECK(kalm::io::is_stdio("-"));
  DOCTEST_CHECK(kalm::io::is_stdio(""));
  DOCTEST_CHECK(!kalm::io::is_stdio("a.jsonl"));
}
