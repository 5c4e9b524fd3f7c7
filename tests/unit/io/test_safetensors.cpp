// safetensors: the single-file reader and writer.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "io/test_safetensors_util.h"
#include "kalm/error.h"
#include "kalm/io/safetensors.h"

using kalm::FormatError;
using kalm::io::DType;
using kalm::io::SafetensorsFile;
using kalm::io::SafetensorsWriter;
using kalm_st_test::raw_safetensors;
using kalm_st_test::read_bytes;
using kalm_st_test::TempDir;
using kalm_st_test::u64_le;
using kalm_st_test::write_bytes;

namespace {

std::vector<std::uint8_t> pattern(std::size_t n, unsigned seed) {
  std::vector<std::uint8_t> out(n);
  for (std::size_t i = 0; i < n; ++i)
    out[i] = static_cast<std::uint8_t>((i * 37 + seed * 11 + 5) & 0xFF);
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Writes `bytes` to a fresh file, opens it, and returns the FormatError message
// ("" when it opened fine, which the caller's CHECK then reports).
std::string open_error(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir.file(name);
  write_bytes(path, bytes);
  try {
    SafetensorsFile::open(path);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

// One F32 tensor "w" of two elements with a chosen header entry.
std::string file_with_entry(const std::string& entry, std::size_t data_bytes = 8) {
  return raw_safetensors("{\"w\":" + entry + "}", std::string(data_bytes, '\x01'));
}

}  // namespace

DOCTEST_TEST_CASE("safetensors dtypes: sizes, names, parsing") {
  const std::map<DType, std::pair<std::string, std::size_t>> expected = {
      {DType::F64, {"F64", 8}},   {DType::F32, {"F32", 4}}, {DType::F16, {"F16", 2}},
      {DType::BF16, {"BF16", 2}}, {DType::I64, {"I64", 8}}, {DType::I32, {"I32", 4}},
      {DType::I16, {"I16", 2}},   {DType::I8, {"I8", 1}},   {DType::U8, {"U8", 1}},
      {DType::BOOL, {"BOOL", 1}}};
  DOCTEST_CHECK(std::size(kalm::io::kAllDTypes) == expected.size());
  for (DType d : kalm::io::kAllDTypes) {
    DOCTEST_CHECK(kalm::io::dtype_name(d) == expected.at(d).first);
    DOCTEST_CHECK(kalm::io::dtype_size(d) == expected.at(d).second);
    DOCTEST_CHECK(kalm::io::try_parse_dtype(expected.at(d).first) == d);
  }
  DOCTEST_CHECK_FALSE(kalm::io::try_parse_dtype("f32").has_value());
  DOCTEST_CHECK_FALSE(kalm::io::try_parse_dtype("F8_E4M3").has_value());
  DOCTEST_CHECK_FALSE(kalm::io::try_parse_dtype("").has_value());
  try {
    kalm::io::parse_dtype("U16", "x.safetensors: tensor 'w'");
    DOCTEST_FAIL("no exception");
  } catch (const FormatError& e) {
    DOCTEST_CHECK(contains(e.what(), "x.safetensors: tensor 'w'"));
    DOCTEST_CHECK(contains(e.what(), "'U16'"));
  }
}

DOCTEST_TEST_CASE("safetensors writer: header bytes match the reference library") {
  TempDir dir;
  // The reference library's own serialisation test: F32 "attn.0" [1,2,3] with
  // values 0..5 gives a 64-byte header (no padding needed) then the floats.
  std::vector<float> values = {0, 1, 2, 3, 4, 5};
  SafetensorsWriter w;
  w.add("attn.0", DType::F32, {1, 2, 3}, values.data(), values.size() * sizeof(float));
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  DOCTEST_REQUIRE(header.size() == 64);
  DOCTEST_CHECK(w.header() == header);
  DOCTEST_CHECK(w.file_size() == 8 + 64 + 24);
  w.write(dir.file("a.safetensors"));
  std::string expected = u64_le(64) + header;
  expected.append(reinterpret_cast<const char*>(values.data()), 24);
  DOCTEST_CHECK(read_bytes(dir.file("a.safetensors")) == expected);

  // Padding with spaces to a multiple of 8: "attn0" is one byte shorter.
  SafetensorsWriter w2;
  w2.add("attn0", DType::F32, {1, 1, 2, 3}, values.data(), 24);
  DOCTEST_CHECK(
      w2.header() ==
      std::string(R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})") +
          "       ");

  // No tensors: "{}" + 6 spaces; with metadata, __metadata__ first.
  SafetensorsWriter empty;
  DOCTEST_CHECK(empty.header() == "{}      ");
  empty.set_metadata("framework", "pt");
  DOCTEST_CHECK(empty.header() == std::string(R"({"__metadata__":{"framework":"pt"}})") + "     ");
  empty.write(dir.file("empty.safetensors"));
  DOCTEST_CHECK(read_bytes(dir.file("empty.safetensors")) ==
                u64_le(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  auto f = SafetensorsFile::open(dir.file("empty.safetensors"));
  DOCTEST_CHECK(f.tensors().empty());
  DOCTEST_CHECK(f.metadata() == std::map<std::string, std::string>{{"framework", "pt"}});
  DOCTEST_CHECK(f.data_size() == 0);
}

DOCTEST_TEST_CASE("safetensors writer: data ordered by dtype width, then name; all aligned") {
  SafetensorsWriter w;
  auto b1 = pattern(3, 1), i8 = pattern(2, 2), f32 = pattern(8, 3), i64 = pattern(8, 4),
       h = pattern(6, 5);
  w.add("zz_bool", DType::BOOL, {3}, std::vector<std::uint8_t>{1, 0, 1});
  w.add("b_f32", DType::F32, {2}, f32);
  w.add("a_i8", DType::I8, {2}, i8);
  w.add("c_f16", DType::F16, {3}, h);
  w.add("a_f32", DType::F32, {2}, f32);
  w.add("y_i64", DType::I64, {1}, i64);
  const std::string header = w.header();
  const std::size_t json_size = header.find_last_not_of(' ') + 1;
  DOCTEST_CHECK(header.size() % 8 == 0);
  DOCTEST_CHECK(header.size() - json_size < 8);
  DOCTEST_CHECK(header.substr(0, json_size) ==
                R"({"y_i64":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                R"("a_f32":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
                R"("b_f32":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
                R"("c_f16":{"dtype":"F16","shape":[3],"data_offsets":[24,30]},)"
                R"("a_i8":{"dtype":"I8","shape":[2],"data_offsets":[30,32]},)"
                R"("zz_bool":{"dtype":"BOOL","shape":[3],"data_offsets":[32,35]}})");
  // entries() keeps insertion order.
  DOCTEST_REQUIRE(w.entries().size() == 6);
  DOCTEST_CHECK(w.entries()[0].name == "zz_bool");
  DOCTEST_CHECK(w.entries()[5].name == "y_i64");
  DOCTEST_CHECK(w.data_size() == 35);
}

DOCTEST_TEST_CASE("safetensors round trip: every dtype, scalars, zero-size tensors, metadata") {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  struct Expect {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;
  };
  std::map<std::string, Expect> expect;
  unsigned seed = 0;
  SafetensorsWriter w;
  for (DType d : kalm::io::kAllDTypes) {
    const std::string base = "t." + std::string(kalm::io::dtype_name(d));
    const std::size_t es = kalm::io::dtype_size(d);
    std::vector<std::uint8_t> bytes = pattern(2 * 3 * es, ++seed);
    if (d == DType::BOOL)
      for (auto& b : bytes) b &= 1;
    expect[base] = {d, {2, 3}, bytes};
    expect[base + ".scalar"] = {
        d, {}, std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + es)};
    expect[base + ".empty"] = {d, {0, 4}, {}};
    expect[base + ".empty2"] = {d, {3, 0}, {}};
  }
  for (auto& [name, e] : expect) {
    if (name.size() % 2) {  // both ways of adding: owned copy and borrowed pointer
      w.add(name, e.dtype, e.shape, e.bytes);
    } else {
      w.add(name, e.dtype, e.shape, e.bytes.data(), e.bytes.size());
    }
  }
  w.set_metadata({{"tool", "kalm-embed"}, {"dim", "896"}, {"quote\"nl\n", "tab\tuni \xC3\xA9"}});
  w.write(path);

  auto f = SafetensorsFile::open(path);
  DOCTEST_CHECK(f.path() == path);
  DOCTEST_CHECK(f.metadata().size() == 3);
  DOCTEST_CHECK(f.metadata_value("dim") == std::optional<std::string>("896"));
  DOCTEST_CHECK(f.metadata_value("quote\"nl\n") == std::optional<std::string>("tab\tuni \xC3\xA9"));
  DOCTEST_CHECK_FALSE(f.metadata_value("absent").has_value());
  DOCTEST_REQUIRE(f.tensors().size() == expect.size());
  std::string previous;
  for (const auto& t : f.tensors()) {
    DOCTEST_CAPTURE(t.name);
    DOCTEST_CHECK(t.name > previous);  // sorted by name
    previous = t.name;
    const Expect& e = expect.at(t.name);
    DOCTEST_CHECK(t.dtype == e.dtype);
    DOCTEST_CHECK(t.shape == e.shape);
    DOCTEST_CHECK(t.nbytes() == e.bytes.size());
    std::int64_t numel = 1;
    for (auto d : e.shape) numel *= d;
    DOCTEST_CHECK(t.numel() == numel);
    const std::uint8_t* p = f.data(t);
    DOCTEST_CHECK(reinterpret_cast<std::uintptr_t>(p) % kalm::io::dtype_size(t.dtype) == 0);
    DOCTEST_CHECK(std::vector<std::uint8_t>(p, p + t.nbytes()) == e.bytes);
  }
  DOCTEST_CHECK(f.find("t.F32") == &f.at("t.F32"));
  DOCTEST_CHECK(f.find("t.F3") == nullptr);
  DOCTEST_CHECK(f.contains("t.BOOL.empty2"));
  DOCTEST_CHECK_FALSE(f.contains("nope"));
}

DOCTEST_TEST_CASE("safetensors: awkward names survive the JSON round trip") {
  TempDir dir;
  const std::vector<std::string> names = {
      "a\"b", "back\\slash", "new\nline", "ctl\x01", "\xE4\xB8\xAD\xE6\x96\x87", "/slash/ok", " "};
  SafetensorsWriter w;
  std::uint8_t v = 0;
  for (const auto& n : names) w.add(n, DType::U8, {1}, std::vector<std::uint8_t>{++v});
  w.write(dir.file("names.safetensors"));
  DOCTEST_CHECK(contains(w.header(), R"("ctl\u0001")"));
  auto f = SafetensorsFile::open(dir.file("names.safetensors"));
  DOCTEST_REQUIRE(f.tensors().size() == names.size());
  v = 0;
  for (const auto& n : names) {
    DOCTEST_CAPTURE(n);
    DOCTEST_REQUIRE(f.contains(n));
    DOCTEST_CHECK(*f.data(f.at(n)) == ++v);
  }
}

DOCTEST_TEST_CASE("safetensors: the mapping outlives the file object through keepalive()") {
  TempDir dir;
  std::vector<std::int32_t> values = {7, -8, 9};
  SafetensorsWriter w;
  w.add("x", DType::I32, {3}, values.data(), 12);
  w.write(dir.file("k.safetensors"));
  std::shared_ptr<const void> keep;
  const std::int32_t* p = nullptr;
  {
    auto f = SafetensorsFile::open(dir.file("k.safetensors"));
    keep = f.keepalive();
    p = reinterpret_cast<const std::int32_t*>(f.data(f.at("x")));
  }
  std::filesystem::remove(dir.file("k.safetensors"));  // unlinked: the mapping stays valid
  DOCTEST_CHECK(p[0] == 7);
  DOCTEST_CHECK(p[1] == -8);
  DOCTEST_CHECK(p[2] == 9);
  keep.reset();
}

DOCTEST_TEST_CASE("safetensors reader: accepts what the format allows") {
  TempDir dir;
  DOCTEST_SUBCASE("header padded with spaces, gaps and unknown fields") {
    std::string header = R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8],"extra":[1]},)"
                         R"("a":{"data_offsets":[0,2],"shape":[2],"dtype":"I8"}})";
    header += "     ";
    write_bytes(dir.file("p.safetensors"),
                raw_safetensors(header, "\x01\x02\x03\x04\x05\x06\x07\x08"));
    auto f = SafetensorsFile::open(dir.file("p.safetensors"));
    DOCTEST_REQUIRE(f.tensors().size() == 2);
    DOCTEST_CHECK(f.tensors()[0].name == "a");
    DOCTEST_CHECK(f.data(f.at("a"))[1] == 2);
    DOCTEST_CHECK(f.data(f.at("b"))[0] == 7);
    DOCTEST_CHECK(f.data_size() == 8);
    DOCTEST_CHECK(f.metadata().empty());
  }
  DOCTEST_SUBCASE("null metadata, zero-size tensor at the very end") {
    const std::string header =
        R"({"__metadata__":null,"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
        R"("s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
    write_bytes(dir.file("n.safetensors"), raw_safetensors(header, std::string(4, '\0')));
    auto f = SafetensorsFile::open(dir.file("n.safetensors"));
    DOCTEST_CHECK(f.tensors().size() == 2);
    DOCTEST_CHECK(f.at("e").nbytes() == 0);
    DOCTEST_CHECK(f.at("s").shape.empty());
    DOCTEST_CHECK(f.at("s").numel() == 1);
  }
  DOCTEST_SUBCASE("a pipe is read into memory") {
    SafetensorsWriter w;
    w.add("v", DType::I16, {2}, std::vector<std::uint8_t>{1, 0, 2, 0});
    w.write(dir.file("src.safetensors"));
    const std::string bytes = read_bytes(dir.file("src.safetensors"));
    int fds[2];
    DOCTEST_REQUIRE(::pipe(fds) == 0);
    DOCTEST_REQUIRE(::write(fds[1], bytes.data(), bytes.size()) ==
                    static_cast<ssize_t>(bytes.size()));
    ::close(fds[1]);
    auto f = SafetensorsFile::open("/proc/self/fd/" + std::to_string(fds[0]));
    ::close(fds[0]);
    DOCTEST_CHECK(f.at("v").shape == std::vector<std::int64_t>{2});
    DOCTEST_CHECK(f.data(f.at("v"))[2] == 2);
  }
}

DOCTEST_TEST_CASE("safetensors reader: malformed files are FormatErrors naming file and tensor") {
  TempDir dir;
  struct Case {
    std::string label;
    std::string bytes;
    std::vector<std::string> needles;  // in the message besides the file name
  };
  const std::string ok_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<Case> cases = {
      {"empty file", "", {"header", "0 bytes"}},
      {"shorter than 8 bytes", std::string("\x05\x00\x00", 3), {"header", "3 bytes"}},
      {"header length beyond the file", u64_le(100) + "{}", {"header", "runs past the end"}},
      {"header length absurd", u64_le(200'000'000) + "{}", {"header", "exceeds the limit"}},
      {"header length huge (overflow)", u64_le(~0ULL) + "{}", {"header", "exceeds the limit"}},
      {"header not JSON", raw_safetensors("{\"w\": nope}", ""), {"header", "not valid JSON"}},
      {"header truncated JSON", raw_safetensors("{\"w\":{", ""), {"header", "not valid JSON"}},
      {"header invalid UTF-8", raw_safetensors("{\"\xff\":1}", ""), {"header", "not valid JSON"}},
      {"header empty", raw_safetensors("", ""), {"header", "not valid JSON"}},
      {"header JSON array", raw_safetensors("[1,2]", ""), {"header", "must be a JSON object"}},
      {"header JSON string", raw_safetensors("\"x\"", ""), {"header", "must be a JSON object"}},
      {"entry not an object",
       raw_safetensors(R"({"w":5})", ""),
       {"tensor 'w'", "must be an object"}},
      {"offsets outside the data",
       file_with_entry(ok_entry, 4),
       {"tensor 'w'", "run past the end"}},
      {"offsets far outside",
       file_with_entry(
           R"({"dtype":"F32","shape":[2],"data_offsets":[18446744073709551600,18446744073709551608]})"),
       {"tensor 'w'", "run past the end"}},
      {"begin after end",
       file_with_entry(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"),
       {"tensor 'w'", "begin is after end"}},
      {"shape x dtype != span",
       file_with_entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 12),
       {"tensor 'w'", "needs 12 bytes", "span 8"}},
      {"dtype size mismatch",
       file_with_entry(R"({"dtype":"F64","shape":[2],"data_offsets":[0,8]})"),
       {"tensor 'w'", "F64"}},
      {"shape product overflows",
       file_with_entry(
           R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]})"),
       {"tensor 'w'", "too large"}},
      {"zero dim but huge others",
       file_with_entry(R"({"dtype":"F32","shape":[0,9223372036854775807,4],"data_offsets":[0,0]})"),
       {"tensor 'w'", "too large"}},
      {"dim beyond int64",
       file_with_entry(R"({"dtype":"F32","shape":[0,10000000000000000000],"data_offsets":[0,0]})"),
       {"tensor 'w'", "shape[1] is too large"}},
      {"unknown dtype F8_E4M3",
       file_with_entry(R"({"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]})"),
       {"tensor 'w'", "unsupported dtype 'F8_E4M3'"}},
      {"dtype not a string",
       file_with_entry(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"),
       {"tensor 'w'", "'dtype' must be a string"}},
      {"negative shape",
       file_with_entry(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"),
       {"tensor 'w'", "shape[0] is -2"}},
      {"non-integer shape",
       file_with_entry(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"),
       {"tensor 'w'", "shape[0] must be a non-negative integer"}},
      {"string shape",
       file_with_entry(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"),
       {"tensor 'w'", "'shape' must be an array"}},
      {"shape element string",
       file_with_entry(R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"),
       {"tensor 'w'", "shape[0]"}},
      {"negative offset",
       file_with_entry(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"),
       {"tensor 'w'", "data_offsets[0] is -8"}},
      {"fractional offset",
       file_with_entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8.5]})"),
       {"tensor 'w'", "data_offsets[1]"}},
      {"offsets of length 3",
       file_with_entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})"),
       {"tensor 'w'", "[begin, end]"}},
      {"missing dtype",
       file_with_entry(R"({"shape":[2],"data_offsets":[0,8]})"),
       {"tensor 'w'", "missing field 'dtype'"}},
      {"missing shape",
       file_with_entry(R"({"dtype":"F32","data_offsets":[0,8]})"),
       {"tensor 'w'", "missing field 'shape'"}},
      {"missing offsets",
       file_with_entry(R"({"dtype":"F32","shape":[2]})"),
       {"tensor 'w'", "missing field 'data_offsets'"}},
      {"field twice in an entry",
       file_with_entry(R"({"dtype":"F32","shape":[2],"dtype":"F16","data_offsets":[0,8]})"),
       {"tensor 'w'", "'dtype' appears twice"}},
      {"duplicate tensor names",
       raw_safetensors(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                       "ab"),
       {"tensor 'w'", "appears twice"}},
      {"overlapping tensors",
       raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       std::string(12, '\0')),
       {"tensor 'b'", "overlap tensor 'a'"}},
      {"tensor inside another",
       raw_safetensors(R"({"big":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},)"
                       R"("small":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},)"
                       R"("z":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}})",
                       std::string(10, '\0')),
       {"overlap tensor 'big'"}},
      {"metadata value not a string",
       raw_safetensors(R"({"__metadata__":{"a":"x","n":1}})", ""),
       {"header", "__metadata__", "'n'", "must be a string"}},
      {"metadata not an object",
       raw_safetensors(R"({"__metadata__":["a"]})", ""),
       {"header", "__metadata__", "must be an object"}},
      {"metadata twice",
       raw_safetensors(R"({"__metadata__":{"a":"x"},"__metadata__":{"b":"y"}})", ""),
       {"header", "__metadata__", "twice"}},
      {"metadata key twice",
       raw_safetensors(R"({"__metadata__":{"a":"x","a":"y"}})", ""),
       {"header", "'a'", "twice"}},
  };
  int i = 0;
  for (const auto& c : cases) {
    DOCTEST_CAPTURE(c.label);
    const std::string name = "bad" + std::to_string(i++) + ".safetensors";
    const std::string message = open_error(dir, name, c.bytes);
    DOCTEST_CAPTURE(message);
    DOCTEST_CHECK(contains(message, dir.file(name) + ": "));
    for (const auto& needle : c.needles) DOCTEST_CHECK(contains(message, needle));
  }
}

DOCTEST_TEST_CASE("safetensors reader: missing files and lookups") {
  TempDir dir;
  DOCTEST_CHECK_THROWS_AS(SafetensorsFile::open(dir.file("absent.safetensors")), kalm::IoError);
  DOCTEST_CHECK_THROWS_AS(SafetensorsFile::open(dir.path()), kalm::IoError);
  try {
    SafetensorsFile::open(dir.file("absent.safetensors"));
  } catch (const kalm::IoError& e) {
    DOCTEST_CHECK(contains(e.what(), "absent.safetensors"));
  }
  SafetensorsWriter w;
  w.add("x", DType::U8, {1}, std::vector<std::uint8_t>{1});
  w.write(dir.file("one.safetensors"));
  auto f = SafetensorsFile::open(dir.file("one.safetensors"));
  try {
    f.at("y");
    DOCTEST_FAIL("no exception");
  } catch (const FormatError& e) {
    DOCTEST_CHECK(std::string(e.what()) == dir.file("one.safetensors") + ": no tensor named 'y'");
  }
}

DOCTEST_TEST_CASE("safetensors writer: validation") {
  SafetensorsWriter w;
  w.add("ok", DType::F16, {2}, std::vector<std::uint8_t>(4, 0));
  auto message = [&](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const FormatError& e) {
      return e.what();
    }
    return "";
  };
  DOCTEST_CHECK(
      contains(message([&] { w.add("ok", DType::F16, {2}, std::vector<std::uint8_t>(4)); }),
               "tensor 'ok': added twice"));
  DOCTEST_CHECK(contains(message([&] { w.add("", DType::U8, {}, std::vector<std::uint8_t>(1)); }),
                         "empty tensor name"));
  DOCTEST_CHECK(
      contains(message([&] { w.add("__metadata__", DType::U8, {}, std::vector<std::uint8_t>(1)); }),
               "reserved"));
  DOCTEST_CHECK(contains(message([&] { w.add("n", DType::U8, {-1}, std::vector<std::uint8_t>()); }),
                         "negative dimension"));
  DOCTEST_CHECK(
      contains(message([&] { w.add("s", DType::F32, {3}, std::vector<std::uint8_t>(8)); }),
               "needs 12 bytes, got 8"));
  DOCTEST_CHECK(contains(message([&] { w.add("p", DType::F32, {3}, nullptr, 12); }), "null data"));
  DOCTEST_CHECK(
      contains(message([&] { w.add("\xff", DType::U8, {}, std::vector<std::uint8_t>(1)); }),
               "not valid UTF-8"));
  DOCTEST_CHECK(contains(
      message([&] {
        w.add("big", DType::F64, {std::int64_t(1) << 40, std::int64_t(1) << 40}, nullptr, 0);
      }),
      "too large"));
  DOCTEST_CHECK_THROWS_AS(w.set_metadata("k", "\xc3"), FormatError);
  DOCTEST_CHECK_THROWS_AS(w.set_metadata("\xc3", "v"), FormatError);
  // Nothing of the failed adds remains.
  DOCTEST_CHECK(w.entries().size() == 1);
  DOCTEST_CHECK(w.contains("ok"));
  DOCTEST_CHECK_FALSE(w.contains("s"));
  DOCTEST_CHECK(w.metadata().empty());
  // A zero-size tensor may come with a null pointer.
  w.add("z", DType::F32, {0, 5}, nullptr, 0);
  DOCTEST_CHECK(w.entries().size() == 2);
}

DOCTEST_TEST_CASE("safetensors writer: a failed write leaves no file behind") {
  TempDir dir;
  std::vector<std::uint8_t> big(1 << 20, 0x5a);
  SafetensorsWriter w;
  w.add("big", DType::U8, {static_cast<std::int64_t>(big.size())}, big.data(), big.size());

  DOCTEST_SUBCASE("disk full part-way") {
    const std::string path = dir.file("out.safetensors");
    write_bytes(path, "previous contents");
    {
      kalm_st_test::FileSizeLimit limit(64 * 1024);
      DOCTEST_CHECK_THROWS_AS(w.write(path), kalm::IoError);
    }
    DOCTEST_CHECK(read_bytes(path) == "previous contents");
    DOCTEST_CHECK(dir.list() == std::vector<std::string>{"out.safetensors"});
  }
  DOCTEST_SUBCASE("directory missing") {
    DOCTEST_CHECK_THROWS_AS(w.write(dir.file("no/such/dir/out.safetensors")), kalm::IoError);
    DOCTEST_CHECK(dir.list().empty());
  }
  DOCTEST_SUBCASE("success writes the expected size") {
    w.write(dir.file("ok.safetensors"));
    DOCTEST_CHECK(std::filesystem::file_size(dir.file("ok.safetensors")) == w.file_size());
    DOCTEST_CHECK(dir.list() == std::vector<std::string>{"ok.safetensors"});
  }
}

DOCTEST_TEST_CASE("safetensors reader: every truncation and byte substitution is handled") {
  // A valid file, then damaged deterministically in every header byte and cut at
  // every length: each open either succeeds (with in-bounds tensors) or throws
  // FormatError; nothing else, never a crash.
  TempDir dir;
  SafetensorsWriter w;
  w.add("a", DType::F32, {2, 2}, pattern(16, 1));
  w.add("b", DType::I8, {3}, pattern(3, 2));
  w.add("c", DType::BF16, {0}, std::vector<std::uint8_t>{});
  w.set_metadata("k", "v");
  w.write(dir.file("good.safetensors"));
  const std::string good = read_bytes(dir.file("good.safetensors"));
  const std::string path = dir.file("damaged.safetensors");
  int opened = 0, rejected = 0;
  auto attempt = [&](const std::string& bytes) {
    write_bytes(path, bytes);
    try {
      auto f = SafetensorsFile::open(path);
      for (const auto& t : f.tensors()) DOCTEST_CHECK(t.end <= f.data_size());
      ++opened;
    } catch (const FormatError& e) {
      DOCTEST_CHECK(contains(e.what(), path + ": "));
      ++rejected;
    }
  };
  for (std::size_t len = 0; len < good.size(); ++len) attempt(good.substr(0, len));
  const std::string header_end = good.substr(0, 8 + w.header().size());
  for (std::size_t i = 0; i < header_end.size(); ++i)
    for (char c : {'\0', '"', '}', ']', ',', '-', '9', '\xff', ' '}) {
      std::string bytes = good;
      bytes[i] = c;
      attempt(bytes);
    }
  DOCTEST_CHECK(rejected > 0);
  DOCTEST_CHECK(opened > 0);  // e.g. a changed metadata character or padding byte
}

DOCTEST_TEST_CASE("count_non_finite finds NaN and infinity in every float dtype, at any alignment") {
  using kalm::io::DType;
  auto bytes_of = [](auto... words) {
    std::vector<std::uint8_t> out(1, 0xAB);  // one leading byte: the data is unaligned
    for (auto w : {words...}) {
      std::uint8_t b[sizeof(w)];
      std::memcpy(b, &w, sizeof(w));
      out.insert(out.end(), b, b + sizeof(w));
    }
    return out;
  };
  // f32: 1.0, +inf, NaN, -0.0, largest finite
  auto f32 = bytes_of(0x3F800000u, 0x7F800000u, 0x7FC00001u, 0x80000000u, 0x7F7FFFFFu);
  auto r = kalm::io::count_non_finite(DType::F32, f32.data() + 1, f32.size() - 1);
  DOCTEST_CHECK(r.count == 2);
  DOCTEST_CHECK(r.first == 1);
  // bf16: 1.0, largest finite, -inf;  f16: 1.0, 65504, NaN, -inf
  auto bf16 = bytes_of(std::uint16_t{0x3F80}, std::uint16_t{0x7F7F}, std::uint16_t{0xFF80});
  r = kalm::io::count_non_finite(DType::BF16, bf16.data() + 1, bf16.size() - 1);
  DOCTEST_CHECK(r.count == 1);
  DOCTEST_CHECK(r.first == 2);
  auto f16 = bytes_of(std::uint16_t{0x3C00}, std::uint16_t{0x7BFF}, std::uint16_t{0x7E00}, std::uint16_t{0xFC00});
  r = kalm::io::count_non_finite(DType::F16, f16.data() + 1, f16.size() - 1);
  DOCTEST_CHECK(r.count == 2);
  DOCTEST_CHECK(r.first == 2);
  auto f64 = bytes_of(0x3FF0000000000000ull, 0x7FEFFFFFFFFFFFFFull, 0xFFF8000000000000ull);
  r = kalm::io::count_non_finite(DType::F64, f64.data() + 1, f64.size() - 1);
  DOCTEST_CHECK(r.count == 1);
  DOCTEST_CHECK(r.first == 2);
  // Integers have no non-finite values, whatever their bits.
  auto i32 = bytes_of(0x7F800000u, 0xFFFFFFFFu);
  DOCTEST_CHECK(kalm::io::count_non_finite(DType::I32, i32.data() + 1, i32.size() - 1).count == 0);
  // A large tensor (the parallel path): two bad values far apart, the first reported.
  std::vector<float> big(3'000'000, 0.25f);
  big[2'999'000] = std::numeric_limits<float>::infinity();
  big[1'234'567] = std::numeric_limits<float>::quiet_NaN();
  r = kalm::io::count_non_finite(DType::F32, reinterpret_cast<const std::uint8_t*>(big.data()), big.size() * 4);
  DOCTEST_CHECK(r.count == 2);
  DOCTEST_CHECK(r.first == 1'234'567);
  DOCTEST_CHECK(kalm::io::describe_non_finite(r) ==
                "2 non-finite values (NaN or infinity; the first at flat index 1234567)");
}
