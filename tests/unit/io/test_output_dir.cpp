// Output claims (flock), staging directories and publishing a staged export.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/output_dir.h"
#include "test_jsonl_util.h"

namespace fs = std::filesystem;
using kalm_test::read_file;
using kalm_test::TempDir;
using kalm_test::write_file;

namespace {
template <class F>
std::string io_error_of(F&& f) {
  try {
    f();
  } catch (const kalm::IoError& e) {
    return e.what();
  }
  return "";
}
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

DOCTEST_TEST_CASE("OutputLock: a second claim on a held directory fails naming the holder; release frees it") {
  TempDir tmp;
  const std::string dir = tmp.file("run");
  {
    auto first = kalm::io::OutputLock::directory(dir, "kalm-train");
    DOCTEST_CHECK(fs::is_directory(dir));
    DOCTEST_REQUIRE(first.lock_paths() == std::vector<std::string>{dir + "/.kalm.lock"});
    const std::string holder = read_file(dir + "/.kalm.lock");
    DOCTEST_CHECK(starts_with(holder, "pid " + std::to_string(::getpid()) + " on host "));
    DOCTEST_CHECK(holder.find(", kalm-train started 20") != std::string::npos);
    const std::string msg = io_error_of([&] { kalm::io::OutputLock::directory(dir, "kalm-distill"); });
    DOCTEST_CHECK(starts_with(msg, dir + ": another run is writing this output (pid " + std::to_string(::getpid())));
    DOCTEST_CHECK(msg.find("kalm-train started") != std::string::npos);
    DOCTEST_CHECK(msg.find("); wait for it to finish or choose another output") != std::string::npos);
  }
  DOCTEST_CHECK_FALSE(fs::exists(dir + "/.kalm.lock"));  // removed on release
  auto again = kalm::io::OutputLock::directory(dir, "kalm-train");
  DOCTEST_CHECK(again.lock_paths().size() == 1);
  auto moved = std::move(again);
  DOCTEST_CHECK(again.lock_paths().empty());
  moved.release();
  DOCTEST_CHECK_FALSE(fs::exists(dir + "/.kalm.lock"));
}

DOCTEST_TEST_CASE("OutputLock: a holder that dies (kill -9) frees its claim") {
  TempDir tmp;
  const std::string dir = tmp.file("run");
  int ready[2];
  DOCTEST_REQUIRE(::pipe(ready) == 0);
  pid_t child = ::fork();
  DOCTEST_REQUIRE(child >= 0);
  if (child == 0) {
    auto lock = kalm::io::OutputLock::directory(dir, "child");
    (void)!::write(ready[1], "x", 1);
    ::pause();  // killed below
    ::_exit(0);
  }
  char c;
  DOCTEST_REQUIRE(::read(ready[0], &c, 1) == 1);
  DOCTEST_CHECK(io_error_of([&] { kalm::io::OutputLock::directory(dir, "parent"); }).find("child started") !=
                std::string::npos);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  DOCTEST_CHECK(fs::exists(dir + "/.kalm.lock"));  // left behind by the kill, but no longer locked
  auto lock = kalm::io::OutputLock::directory(dir, "parent");
  DOCTEST_CHECK(lock.lock_paths().size() == 1);
}

DOCTEST_TEST_CASE("OutputLock: files are claimed all or none; stdout and devices are not claimed") {
  TempDir tmp;
  const std::string out = tmp.file("out.jsonl"), rej = tmp.file("rej.jsonl"), meta = tmp.file("out.jsonl.meta.json");
  auto held = kalm::io::OutputLock::files({rej}, "first");
  const std::string msg = io_error_of([&] { kalm::io::OutputLock::files({out, rej, meta}, "second"); });
  DOCTEST_CHECK(starts_with(msg, rej + ": another run is writing this output (pid "));
  // The failed claim released what it had taken (out.jsonl's lock).
  DOCTEST_CHECK_FALSE(fs::exists(tmp.file(".out.jsonl.kalm.lock")));
  held.release();
  auto all = kalm::io::OutputLock::files({out, rej, meta, "-", "", "/dev/null", out}, "second");
  auto paths = all.lock_paths();
  std::sort(paths.begin(), paths.end());
  DOCTEST_CHECK(paths == std::vector<std::string>{tmp.file(".out.jsonl.kalm.lock"),
                                                  tmp.file(".out.jsonl.meta.json.kalm.lock"),
                                                  tmp.file(".rej.jsonl.kalm.lock")});
}

DOCTEST_TEST_CASE("publish_staged: markers last, old shards gone, other entries kept") {
  TempDir tmp;
  const std::string target = tmp.file("run"), staging = tmp.file("run/.export.kalm-tmp");
  fs::create_directories(target + "/checkpoint-5");
  fs::create_directories(target + "/1_Pooling");
  write_file(target + "/config.json", "old config");
  write_file(target + "/model-00001-of-00002.safetensors", "old shard");
  write_file(target + "/model.safetensors.index.json", "old index");
  write_file(target + "/1_Pooling/stale.json", "old");
  write_file(target + "/metrics.jsonl", "keep me");
  fs::create_directories(staging + "/1_Pooling");
  write_file(staging + "/config.json", "new config");
  write_file(staging + "/model.safetensors", "new weights");
  write_file(staging + "/1_Pooling/config.json", "pooling");
  write_file(staging + "/kalm_training.json", "state");
  kalm::io::publish_staged(staging, target, {"config.json", "kalm_training.json"}, {"model"});
  DOCTEST_CHECK(read_file(target + "/config.json") == "new config");
  DOCTEST_CHECK(read_file(target + "/model.safetensors") == "new weights");
  DOCTEST_CHECK(read_file(target + "/kalm_training.json") == "state");
  DOCTEST_CHECK(read_file(target + "/1_Pooling/config.json") == "pooling");
  DOCTEST_CHECK_FALSE(fs::exists(target + "/1_Pooling/stale.json"));
  DOCTEST_CHECK_FALSE(fs::exists(target + "/model-00001-of-00002.safetensors"));
  DOCTEST_CHECK_FALSE(fs::exists(target + "/model.safetensors.index.json"));
  DOCTEST_CHECK(fs::is_directory(target + "/checkpoint-5"));
  DOCTEST_CHECK(read_file(target + "/metrics.jsonl") == "keep me");
  DOCTEST_CHECK_FALSE(fs::exists(staging));
}

DOCTEST_TEST_CASE("StagingDirectory: removed unless published; leftovers of killed runs are cleaned") {
  TempDir tmp;
  const std::string dir = tmp.file("run");
  fs::create_directories(dir + "/.checkpoint-3.kalm-tmp");
  write_file(dir + "/.checkpoint-3.kalm-tmp/model.safetensors", "partial");
  write_file(dir + "/.config.json.kalm-tmp.Ab12Cd", "partial");
  write_file(dir + "/.kalm.lock", "pid 1");
  write_file(dir + "/config.json", "{}");
  kalm::io::remove_staging_leftovers(dir);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  DOCTEST_CHECK(names == std::vector<std::string>{".kalm.lock", "config.json"});

  try {
    kalm::io::StagingDirectory staging(dir + "/.export.kalm-tmp");
    write_file(staging.path() + "/model.safetensors", "half");
    throw kalm::IoError("disk full");
  } catch (const kalm::IoError&) {
  }
  DOCTEST_CHECK_FALSE(fs::exists(dir + "/.export.kalm-tmp"));
  {
    kalm::io::StagingDirectory staging(dir + "/.export.kalm-tmp");
    staging.published();
  }
  DOCTEST_CHECK(fs::exists(dir + "/.export.kalm-tmp"));  // published: left to its new owner
}
