#pragma once
// Helpers shared by the model unit tests: fixture paths, a scratch directory,
// whole-file I/O and the expected outputs written by
// tests/fixtures/models/gen_fixtures.py.

#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include "kalm/io/remove_tree.h"
#include "kalm/io/safetensors.h"
#include "kalm/model/tensor_io.h"

namespace kalm_model_test {

inline std::string fixture(const std::string& name) {
  return std::string(KALM_FIXTURES_DIR) + "/models/" + name;
}

// A fresh directory, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kalm-model-test.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    kalm::io::remove_tree_nothrow(std::filesystem::path(path_).string());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

// Replaces the first occurrence of `from` (which must exist) in the file.
inline void edit_file(const std::string& path, const std::string& from, const std::string& to) {
  std::string text = read_file(path);
  const auto pos = text.find(from);
  if (pos == std::string::npos) throw std::runtime_error("'" + from + "' not in " + path);
  text.replace(pos, from.size(), to);
  write_file(path, text);
}

// A copy of a fixture model directory (recursively) under `dir`/model.
inline std::string copy_fixture(const std::string& name, const TempDir& dir) {
  const std::string dst = dir.file("model");
  std::filesystem::copy(fixture(name), dst, std::filesystem::copy_options::recursive);
  return dst;
}

// One tensor of <fixture>/expected.safetensors, as an owned copy.
inline torch::Tensor expected(const std::string& name, const std::string& tensor) {
  const auto file = kalm::io::SafetensorsFile::open(fixture(name) + "/expected.safetensors");
  return kalm::model::tensor_copy(file, tensor);
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// The message of the E that fn() throws; a test failure when it throws
// something else or nothing.
template <class E, class Fn>
std::string message_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    DOCTEST_FAIL("unexpected exception type: " << e.what());
  }
  DOCTEST_FAIL("no exception thrown");
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace kalm_model_test
