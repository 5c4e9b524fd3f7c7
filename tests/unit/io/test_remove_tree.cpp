// remove_tree: kalm's one way to delete a directory tree (no std::filesystem::
// remove_all, which pip's LibTorch interposes with a crashing copy).
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "kalm/error.h"
#include "kalm/io/remove_tree.h"

namespace fs = std::filesystem;

namespace {
fs::path scratch(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("kalm_remove_tree_" + name + "_" + std::to_string(::getpid()));
  kalm::io::remove_tree(dir.string());
  fs::create_directories(dir);
  return dir;
}
void touch(const fs::path& p, const std::string& text = "x") { std::ofstream(p) << text; }
}  // namespace

DOCTEST_TEST_CASE("remove_tree removes a nested tree and counts every entry") {
  const fs::path root = scratch("nested");
  fs::create_directories(root / "a" / "b" / "c");
  touch(root / "top.txt");
  touch(root / "a" / "one");
  touch(root / "a" / "b" / "two");
  touch(root / "a" / "b" / "c" / ".hidden");
  fs::create_directories(root / "empty");
  // root, a, b, c, empty + 4 files
  DOCTEST_CHECK(kalm::io::remove_tree(root.string()) == 9);
  DOCTEST_CHECK(!fs::exists(root));
}

DOCTEST_TEST_CASE("remove_tree removes links without following them") {
  const fs::path root = scratch("links");
  const fs::path outside = scratch("links_target");
  touch(outside / "keep.txt", "still here");
  fs::create_directories(root / "d");
  fs::create_directory_symlink(outside, root / "d" / "to_outside");
  fs::create_symlink(outside / "keep.txt", root / "file_link");
  fs::create_symlink(root / "nowhere", root / "dangling");
  DOCTEST_CHECK(kalm::io::remove_tree(root.string()) == 5);
  DOCTEST_CHECK(!fs::exists(root));
  DOCTEST_CHECK(fs::exists(outside / "keep.txt"));
  // A link given as the path itself is removed, its target kept.
  const fs::path link = fs::temp_directory_path() / ("kalm_remove_tree_link_" + std::to_string(::getpid()));
  kalm::io::remove_tree(link.string());
  fs::create_directory_symlink(outside, link);
  DOCTEST_CHECK(kalm::io::remove_tree(link.string()) == 1);
  DOCTEST_CHECK(!fs::exists(fs::symlink_status(link)));
  DOCTEST_CHECK(fs::exists(outside / "keep.txt"));
  DOCTEST_CHECK(kalm::io::remove_tree(outside.string()) == 2);
}

DOCTEST_TEST_CASE("remove_tree: a missing path removes nothing; a plain file is one entry") {
  const fs::path root = scratch("single");
  DOCTEST_CHECK(kalm::io::remove_tree((root / "absent").string()) == 0);
  touch(root / "f");
  DOCTEST_CHECK(kalm::io::remove_tree((root / "f").string()) == 1);
  DOCTEST_CHECK(kalm::io::remove_tree(root.string()) == 1);
}

DOCTEST_TEST_CASE("remove_tree names the entry it cannot remove; the nothrow form says why") {
  const fs::path root = scratch("fail");
  touch(root / "file");
  // A path through a regular file cannot be examined (ENOTDIR).
  const std::string bad = (root / "file" / "child").string();
  try {
    kalm::io::remove_tree(bad);
    DOCTEST_FAIL("expected an IoError");
  } catch (const kalm::IoError& e) {
    DOCTEST_CHECK(std::string(e.what()) == bad + ": cannot remove: Not a directory");
  }
  std::string why;
  DOCTEST_CHECK(!kalm::io::remove_tree_nothrow(bad, &why));
  DOCTEST_CHECK(why == bad + ": Not a directory");
  DOCTEST_CHECK(!kalm::io::remove_tree_nothrow("", &why));
  DOCTEST_CHECK(why == "(empty path): Invalid argument");
  DOCTEST_CHECK(kalm::io::remove_tree_nothrow(root.string()));
  DOCTEST_CHECK(!fs::exists(root));
}
