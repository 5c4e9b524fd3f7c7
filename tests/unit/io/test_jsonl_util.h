#pragma once
// Helpers shared by the io unit tests: a scratch directory, whole-file I/O and
// one-shot zstd compression (libzstd directly, independent of kalm's streams).

#include <doctest/doctest.h>
#include <zstd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "kalm/io/remove_tree.h"

namespace kalm_test {

// A fresh directory, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kalm-io-test.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    kalm::io::remove_tree_nothrow(std::filesystem::path(path_).string());
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Names of the entries in the directory (to spot leftover temporaries).
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path_))
      out.push_back(e.path().filename().string());
    return out;
  }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// One complete zstd frame holding `data`.
inline std::string zstd_frame(const std::string& data, int level = 3) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  std::size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) throw std::runtime_error(ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

inline std::string zstd_decompress_all(const std::string& data) {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::string out;
  std::vector<char> buf(1 << 16);
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  std::size_t ret = 0;
  for (;;) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    ret = ZSTD_decompressStream(dctx, &o, &in);
    if (ZSTD_isError(ret)) {
      ZSTD_freeDCtx(dctx);
      throw std::runtime_error(ZSTD_getErrorName(ret));
    }
    out.append(buf.data(), o.pos);
    // A partly filled output means the decoder holds nothing more for now.
    if (in.pos == in.size && o.pos < o.size) break;
  }
  ZSTD_freeDCtx(dctx);
  if (ret != 0) throw std::runtime_error("truncated zstd data");
  return out;
}

// The message of the exception `fn` throws, checked to be of type E.
template <class E, class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    DOCTEST_FAIL_CHECK("expected another exception type, got: " << e.what());
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

}  // namespace kalm_test
