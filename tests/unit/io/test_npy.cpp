#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "kalm/error.h"
#include "kalm/io/npy.h"

DOCTEST_TEST_CASE("npy header matches numpy's layout") {
  auto h = kalm::io::npy_header("<f4", {3, 2});
  DOCTEST_CHECK(h.size() % 64 == 0);
  DOCTEST_CHECK(h.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  DOCTEST_CHECK(h.find("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }") == 10);
  DOCTEST_CHECK(h.back() == '\n');
  DOCTEST_CHECK(kalm::io::npy_header("<i8", {5}).find("'shape': (5,)") != std::string::npos);
}

DOCTEST_TEST_CASE("npy round trip") {
  auto path = (std::filesystem::temp_directory_path() / ("kalm_npy_" + std::to_string(::getpid()) + ".npy")).string();
  std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  kalm::io::write_npy(path, "<f4", {2, 3}, values.data(), sizeof(float));
  auto arr = kalm::io::read_npy(path);
  DOCTEST_CHECK(arr.descr == "<f4");
  DOCTEST_CHECK(arr.shape == std::vector<std::int64_t>{2, 3});
  DOCTEST_REQUIRE(arr.data.size() == 24);
  DOCTEST_CHECK(reinterpret_cast<const float*>(arr.data.data())[2] == 3.25f);
  // A truncated file is a FormatError naming it.
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  try {
    kalm::io::read_npy(path);
    DOCTEST_FAIL("expected FormatError");
  } catch (const kalm::FormatError& e) {
    DOCTEST_CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
  std::remove(path.c_str());
}
