#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iterator>
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

// ---- targets that are not regular files: written in place, never replaced ----

DOCTEST_TEST_CASE("a character device is written in place: /dev/null stays a device") {
  kalm::io::AtomicOutputFile out("/dev/null");
  DOCTEST_CHECK(out.is_direct());
  out.write("data", 4);
  out.commit();
  DOCTEST_CHECK(fs::is_character_file("/dev/null"));
  DOCTEST_CHECK(kalm::io::writes_in_place("/dev/null"));
}

DOCTEST_TEST_CASE("a full device is an IoError, and stays a device") {
  std::string msg;
  try {
    kalm::io::AtomicOutputFile out("/dev/full");
    std::string block(1 << 16, 'x');  // more than stdio buffers, so write() sees it
    out.write(block.data(), block.size());
    out.commit();
  } catch (const kalm::IoError& e) {
    msg = e.what();
  }
  DOCTEST_CHECK(msg == "/dev/full: write failed: No space left on device");
  DOCTEST_CHECK(fs::is_character_file("/dev/full"));
  // Also when the only write is small and the error comes at commit.
  msg.clear();
  try {
    kalm::io::AtomicOutputFile out("/dev/full");
    out.write("x", 1);
    out.commit();
  } catch (const kalm::IoError& e) {
    msg = e.what();
  }
  DOCTEST_CHECK(msg == "/dev/full: write failed: No space left on device");
}

DOCTEST_TEST_CASE("a FIFO is written in place and stays a FIFO") {
  auto dir = fresh_dir("fifo");
  auto fifo = dir / "pipe";
  DOCTEST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::string got;
  pid_t reader = ::fork();
  DOCTEST_REQUIRE(reader >= 0);
  if (reader == 0) {
    // The child reads the FIFO and reports what it read through its exit code.
    std::ifstream in(fifo, std::ios::binary);
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ::_exit(s == "through the pipe\n" ? 0 : 1);
  }
  {
    kalm::io::AtomicOutputFile out(fifo.string());
    DOCTEST_CHECK(out.is_direct());
    out.write("through the pipe\n", 17);
    out.commit();
  }
  int status = 0;
  ::waitpid(reader, &status, 0);
  DOCTEST_CHECK(WIFEXITED(status));
  DOCTEST_CHECK(WEXITSTATUS(status) == 0);
  DOCTEST_CHECK(fs::is_fifo(fifo));
  DOCTEST_CHECK(entries(dir) == 1);  // no temporary, no sidecar
  kalm::io::remove_tree_nothrow(dir.string());
}

DOCTEST_TEST_CASE("a path naming the file stdout is open on is written through stdout") {
  auto dir = fresh_dir("stdout");
  auto target = dir / "redirected.txt";
  std::fflush(stdout);
  int saved = ::dup(STDOUT_FILENO);
  int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  DOCTEST_REQUIRE(fd >= 0);
  ::dup2(fd, STDOUT_FILENO);
  ::close(fd);
  struct stat before {};
  ::stat(target.c_str(), &before);
  bool direct = false;
  {
    kalm::io::AtomicOutputFile out(target.string());  // like `tool -o F > F`
    direct = out.is_direct();
    out.write("via stdout\n", 11);
    out.commit();
  }
  std::fflush(stdout);
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  DOCTEST_CHECK(direct);
  struct stat after {};
  ::stat(target.c_str(), &after);
  DOCTEST_CHECK(after.st_ino == before.st_ino);  // the same file, not a replacement
  DOCTEST_CHECK(slurp(target) == "via stdout\n");
  DOCTEST_CHECK(entries(dir) == 1);
  kalm::io::remove_tree_nothrow(dir.string());
}

DOCTEST_TEST_CASE("a symbolic link is followed: the file it names is replaced, the link stays") {
  auto dir = fresh_dir("symlink");
  fs::create_directories(dir / "real");
  {
    std::ofstream(dir / "real" / "out.txt") << "old";
  }
  fs::create_symlink("real/out.txt", dir / "link.txt");
  fs::create_symlink(dir / "real" / "new.txt", dir / "dangling.txt");
  for (const char* name : {"link.txt", "dangling.txt"}) {
    kalm::io::AtomicOutputFile out((dir / name).string());
    DOCTEST_CHECK_FALSE(out.is_direct());
    out.write("new", 3);
    out.commit();
    DOCTEST_CHECK(fs::is_symlink(dir / name));
  }
  DOCTEST_CHECK(slurp(dir / "real" / "out.txt") == "new");
  DOCTEST_CHECK(slurp(dir / "real" / "new.txt") == "new");
  DOCTEST_CHECK(entries(dir / "real") == 2);  // no temporary left beside the targets
  DOCTEST_CHECK(entries(dir) == 3);
  kalm::io::remove_tree_nothrow(dir.string());
}

DOCTEST_TEST_CASE("a directory or a socket is refused, naming the path") {
  auto dir = fresh_dir("refuse");
  std::string msg;
  try {
    kalm::io::AtomicOutputFile out(dir.string());
  } catch (const kalm::IoError& e) {
    msg = e.what();
  }
  DOCTEST_CHECK(msg == dir.string() + ": cannot write output file: it is a directory");
  DOCTEST_CHECK(fs::is_directory(dir));
  DOCTEST_CHECK_FALSE(kalm::io::writes_in_place((dir / "absent").string()));
  kalm::io::remove_tree_nothrow(dir.string());
}
