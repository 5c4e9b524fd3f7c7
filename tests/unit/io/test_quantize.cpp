// kalm/io/quantize.h: sentence-transformers' quantize_embeddings rules on
// values whose results are exact (step 1), and the inverse kalm's readers use.
// tests/cli/embed_quantize.sh compares kalm-embed with sentence-transformers itself.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/npy.h"
#include "kalm/io/quantize.h"
#include "kalm/io/safetensors.h"

using kalm::io::Quantization;

namespace {
std::vector<std::int8_t> as_int8(const std::vector<std::uint8_t>& b) { return {b.begin(), b.end()}; }
std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("kalm_quantize_" + std::to_string(::getpid()) + "_" + name)).string();
}
}  // namespace

DOCTEST_TEST_CASE("int8 and uint8: floor((x - min) / step), clipped to 0..255, int8 shifted by 128") {
  // Dimension 0 spans 0..255 (step exactly 1); dimension 1 is constant (step 0 -> 1).
  const std::vector<float> m = {0.0f, 2.0f,  10.7f, 2.0f,  255.0f, 2.0f,  300.0f, 2.9f,  -5.0f, 1.0f};
  const std::vector<float> ranges = {0.0f, 2.0f, 255.0f, 2.0f};
  auto u = kalm::io::quantize(m.data(), 5, 2, Quantization::Uint8, ranges);
  DOCTEST_CHECK(!u.is_signed);
  DOCTEST_CHECK(u.cols == 2);
  DOCTEST_CHECK(u.bytes == std::vector<std::uint8_t>{0, 0, 10, 0, 255, 0, 255, 0, 0, 0});
  auto i = kalm::io::quantize(m.data(), 5, 2, Quantization::Int8, ranges);
  DOCTEST_CHECK(i.is_signed);
  DOCTEST_CHECK(as_int8(i.bytes) == std::vector<std::int8_t>{-128, -128, -118, -128, 127, -128, 127, -128, -128, -128});
  // Reading back: level * step + min.
  auto back = kalm::io::dequantize(i.bytes.data(), 5, 2, Quantization::Int8, ranges);
  DOCTEST_CHECK(back == std::vector<float>{0, 2, 10, 2, 255, 2, 255, 2, 0, 2});
  DOCTEST_CHECK(kalm::io::dequantize(u.bytes.data(), 5, 2, Quantization::Uint8, ranges) == back);
  // The corpus's own ranges.
  auto r = kalm::io::ranges_of(m.data(), 5, 2);
  DOCTEST_CHECK(r == std::vector<float>{-5.0f, 1.0f, 300.0f, 2.9f});
  DOCTEST_CHECK_THROWS_AS(kalm::io::ranges_of(m.data(), 1, 2), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::io::quantize(m.data(), 5, 2, Quantization::Int8, {0.0f, 1.0f}), kalm::UsageError);
}

DOCTEST_TEST_CASE("binary and ubinary: numpy.packbits of x > 0, first dimension in the high bit") {
  // 10 dimensions: 2 bytes, the second zero-padded; 0 is not positive.
  const std::vector<float> m = {1, -1, 1, -1, 1, -1, 1, -1, 1, 0,
                                -1, -1, -1, -1, -1, -1, -1, 0.5f, -1, 2};
  auto ub = kalm::io::quantize(m.data(), 2, 10, Quantization::Ubinary, {});
  DOCTEST_CHECK(ub.cols == 2);
  DOCTEST_CHECK(ub.bytes == std::vector<std::uint8_t>{0xAA, 0x80, 0x01, 0x40});
  auto b = kalm::io::quantize(m.data(), 2, 10, Quantization::Binary, {});
  DOCTEST_CHECK(as_int8(b.bytes) == std::vector<std::int8_t>{42, 0, -127, -64});  // byte - 128
  // Reading back: +1 / -1 per dimension, the padding dropped.
  const std::vector<float> signs = {1, -1, 1, -1, 1, -1, 1, -1, 1, -1,
                                    -1, -1, -1, -1, -1, -1, -1, 1, -1, 1};
  DOCTEST_CHECK(kalm::io::dequantize(ub.bytes.data(), 2, 10, Quantization::Ubinary, {}) == signs);
  DOCTEST_CHECK(kalm::io::dequantize(b.bytes.data(), 2, 10, Quantization::Binary, {}) == signs);
}

DOCTEST_TEST_CASE("quantization names") {
  DOCTEST_CHECK(kalm::io::parse_quantization("int8") == Quantization::Int8);
  DOCTEST_CHECK(kalm::io::parse_quantization("ubinary") == Quantization::Ubinary);
  DOCTEST_CHECK(std::string(kalm::io::quantization_name(Quantization::Binary)) == "binary");
  try {
    kalm::io::parse_quantization("int4");
    DOCTEST_FAIL("int4 accepted");
  } catch (const kalm::UsageError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("--quantize int4") != std::string::npos);
  }
}

DOCTEST_TEST_CASE("quantization ranges from .npy and safetensors files; bad shapes and values refused") {
  const std::string npy = temp_path("ranges.npy");
  const std::vector<float> good = {0.0f, -1.0f, 1.0f, 1.0f};
  kalm::io::write_npy(npy, "<f4", {2, 2}, good.data(), sizeof(float));
  DOCTEST_CHECK(kalm::io::read_quantization_ranges(npy, 2) == good);
  DOCTEST_CHECK_THROWS_WITH_AS(kalm::io::read_quantization_ranges(npy, 3), doctest::Contains("expected [2, 3]"),
                               kalm::FormatError);
  const std::vector<double> wide = {0.0, -1.0, 1.0, 1.0};
  kalm::io::write_npy(npy, "<f8", {2, 2}, wide.data(), sizeof(double));
  DOCTEST_CHECK(kalm::io::read_quantization_ranges(npy, 2) == good);
  const std::vector<float> inverted = {1.0f, -1.0f, 0.0f, 1.0f};
  kalm::io::write_npy(npy, "<f4", {2, 2}, inverted.data(), sizeof(float));
  DOCTEST_CHECK_THROWS_WITH_AS(kalm::io::read_quantization_ranges(npy, 2), doctest::Contains("maximum below its minimum"),
                               kalm::FormatError);
  const std::string st = temp_path("ranges.safetensors");
  kalm::io::SafetensorsWriter w;
  w.add("quantization_ranges", kalm::io::DType::F32, {2, 2}, good.data(), good.size() * sizeof(float));
  w.write(st);
  DOCTEST_CHECK(kalm::io::read_quantization_ranges(st, 2) == good);
  kalm::io::SafetensorsWriter other;
  other.add("embeddings", kalm::io::DType::F32, {2, 2}, good.data(), good.size() * sizeof(float));
  other.write(st);
  DOCTEST_CHECK_THROWS_WITH_AS(kalm::io::read_quantization_ranges(st, 2), doctest::Contains("quantization_ranges"),
                               kalm::FormatError);
  std::filesystem::remove(npy);
  std::filesystem::remove(st);
}
