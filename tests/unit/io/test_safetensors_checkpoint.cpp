// safetensors: model directories (single file or shards + index).
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "io/test_safetensors_util.h"
#include "kalm/error.h"
#include "kalm/io/safetensors.h"

using kalm::io::CheckpointReader;
using kalm::io::DType;
using kalm::io::SafetensorsFile;
using kalm::io::SafetensorsWriter;
using kalm::io::write_checkpoint;
using kalm_st_test::read_bytes;
using kalm_st_test::TempDir;
using kalm_st_test::write_bytes;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Five U8 tensors "t0".."t4" of 400 bytes each, byte value = index + 1.
struct FiveTensors {
  std::vector<std::vector<std::uint8_t>> data;
  SafetensorsWriter writer;
  FiveTensors() {
    for (int i = 0; i < 5; ++i) {
      data.emplace_back(400, static_cast<std::uint8_t>(i + 1));
      writer.add("t" + std::to_string(i), DType::U8, {20, 20}, data.back().data(), 400);
    }
    writer.set_metadata("tool", "test");
  }
};

void check_five(const CheckpointReader& r) {
  DOCTEST_CHECK(r.names() == std::vector<std::string>{"t0", "t1", "t2", "t3", "t4"});
  DOCTEST_CHECK(r.size() == 5);
  DOCTEST_CHECK(r.total_size() == 2000);
  for (int i = 0; i < 5; ++i) {
    const std::string name = "t" + std::to_string(i);
    DOCTEST_CAPTURE(name);
    DOCTEST_REQUIRE(r.contains(name));
    DOCTEST_CHECK(r.info(name).shape == std::vector<std::int64_t>{20, 20});
    DOCTEST_CHECK(r.info(name).dtype == DType::U8);
    const std::uint8_t* p = r.data(name);
    DOCTEST_CHECK(p[0] == i + 1);
    DOCTEST_CHECK(p[399] == i + 1);
    DOCTEST_CHECK(r.file_of(name).metadata_value("tool") == std::optional<std::string>("test"));
    DOCTEST_CHECK(r.file_of(name).metadata_value("format") == std::optional<std::string>("pt"));
  }
}

template <class E, class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

// A shard of one-byte U8 tensors.
void write_shard(const std::string& path, const std::map<std::string, std::uint8_t>& tensors) {
  SafetensorsWriter w;
  for (const auto& [name, v] : tensors) w.add(name, DType::U8, {1}, std::vector<std::uint8_t>{v});
  w.write(path);
}

}  // namespace

DOCTEST_TEST_CASE("checkpoint: everything fits, one model.safetensors") {
  TempDir dir;
  FiveTensors five;
  const std::string model = dir.file("model");
  auto written = write_checkpoint(model, five.writer);  // creates the directory
  DOCTEST_CHECK(written == std::vector<std::string>{"model.safetensors"});
  DOCTEST_CHECK(std::filesystem::is_regular_file(model + "/model.safetensors"));
  DOCTEST_CHECK_FALSE(std::filesystem::exists(model + "/model.safetensors.index.json"));
  auto r = CheckpointReader::open_dir(model);
  DOCTEST_CHECK_FALSE(r.sharded());
  DOCTEST_CHECK(r.files().size() == 1);
  check_five(r);
  // A path to the file itself works too.
  check_five(CheckpointReader::open(model + "/model.safetensors"));
}

DOCTEST_TEST_CASE("checkpoint: sharded round trip, index layout, oversized tensor") {
  TempDir dir;
  FiveTensors five;
  const std::string model = dir.path();
  auto written = write_checkpoint(model, five.writer, 1000);
  // 400+400 fit, the third starts a new shard: [t0 t1] [t2 t3] [t4].
  DOCTEST_CHECK(written == std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                    "model-00002-of-00003.safetensors",
                                                    "model-00003-of-00003.safetensors",
                                                    "model.safetensors.index.json"});
  DOCTEST_CHECK(dir.list() == written);  // no temporaries left
  DOCTEST_CHECK(read_bytes(dir.file("model.safetensors.index.json")) ==
                "{\n"
                "  \"metadata\": {\n"
                "    \"total_size\": 2000\n"
                "  },\n"
                "  \"weight_map\": {\n"
                "    \"t0\": \"model-00001-of-00003.safetensors\",\n"
                "    \"t1\": \"model-00001-of-00003.safetensors\",\n"
                "    \"t2\": \"model-00002-of-00003.safetensors\",\n"
                "    \"t3\": \"model-00002-of-00003.safetensors\",\n"
                "    \"t4\": \"model-00003-of-00003.safetensors\"\n"
                "  }\n"
                "}\n");
  auto shard1 = SafetensorsFile::open(dir.file("model-00001-of-00003.safetensors"));
  DOCTEST_CHECK(shard1.tensors().size() == 2);
  DOCTEST_CHECK(shard1.contains("t1"));

  auto r = CheckpointReader::open(model);
  DOCTEST_CHECK(r.sharded());
  DOCTEST_CHECK(r.files().size() == 3);
  DOCTEST_CHECK(r.file_of("t3").path() == dir.file("model-00002-of-00003.safetensors"));
  check_five(r);
  check_five(CheckpointReader::open(dir.file("model.safetensors.index.json")));

  // A tensor larger than the limit gets a shard of its own.
  TempDir dir2;
  written = write_checkpoint(dir2.path(), five.writer, 300);
  DOCTEST_CHECK(written.size() == 6);
  DOCTEST_CHECK(written[4] == "model-00005-of-00005.safetensors");
  check_five(CheckpointReader::open(dir2.path()));
}

DOCTEST_TEST_CASE("checkpoint: saving again replaces the previous layout") {
  TempDir dir;
  FiveTensors five;
  write_checkpoint(dir.path(), five.writer, 1000);  // 3 shards
  write_checkpoint(dir.path(), five.writer, 800);   // 3 shards, same names
  write_checkpoint(dir.path(), five.writer, 1200);  // 2 shards: the 3-shard files go
  DOCTEST_CHECK(dir.list() == std::vector<std::string>{"model-00001-of-00002.safetensors",
                                                       "model-00002-of-00002.safetensors",
                                                       "model.safetensors.index.json"});
  check_five(CheckpointReader::open(dir.path()));

  write_bytes(dir.file("config.json"), "{}");  // unrelated files stay
  write_checkpoint(dir.path(), five.writer);   // single file: index and shards go
  DOCTEST_CHECK(dir.list() == std::vector<std::string>{"config.json", "model.safetensors"});
  DOCTEST_CHECK_FALSE(CheckpointReader::open(dir.path()).sharded());

  write_checkpoint(dir.path(), five.writer, 1000);  // sharded: the single file goes
  DOCTEST_CHECK(dir.list() == std::vector<std::string>{"config.json",
                                                       "model-00001-of-00003.safetensors",
                                                       "model-00002-of-00003.safetensors",
                                                       "model-00003-of-00003.safetensors",
                                                       "model.safetensors.index.json"});
  check_five(CheckpointReader::open(dir.path()));
}

DOCTEST_TEST_CASE("checkpoint: a failed save renames nothing and keeps the old checkpoint") {
  TempDir dir;
  FiveTensors five;
  write_checkpoint(dir.path(), five.writer, 1000);
  const auto before = dir.list();
  const std::string old_index = read_bytes(dir.file("model.safetensors.index.json"));

  std::vector<std::uint8_t> big(200'000, 9);
  SafetensorsWriter w;
  w.add("small", DType::U8, {10}, std::vector<std::uint8_t>(10, 1));
  w.add("big", DType::U8, {200'000}, big.data(), big.size());
  {
    kalm_st_test::FileSizeLimit limit(100'000);  // the second shard cannot be written
    DOCTEST_CHECK_THROWS_AS(write_checkpoint(dir.path(), w, 1000), kalm::IoError);
  }
  DOCTEST_CHECK(dir.list() == before);
  DOCTEST_CHECK(read_bytes(dir.file("model.safetensors.index.json")) == old_index);
  check_five(CheckpointReader::open(dir.path()));

  DOCTEST_CHECK_THROWS_AS(write_checkpoint(dir.path(), w, 0), kalm::UsageError);
}

DOCTEST_TEST_CASE("checkpoint reader: unusable directories and indexes") {
  TempDir dir;
  const std::string index = dir.file("model.safetensors.index.json");
  auto write_index = [&](const std::string& weight_map) {
    write_bytes(index, "{\"metadata\": {\"total_size\": 2}, \"weight_map\": " + weight_map + "}");
  };
  write_shard(dir.file("a.safetensors"), {{"x", 1}, {"y", 2}});
  write_shard(dir.file("b.safetensors"), {{"z", 3}});

  DOCTEST_SUBCASE("no such directory") {
    auto m = error_of<kalm::ModelError>([&] { CheckpointReader::open(dir.file("nope")); });
    DOCTEST_CHECK(contains(m, dir.file("nope")));
  }
  DOCTEST_SUBCASE("directory without weights") {
    std::filesystem::create_directory(dir.file("empty"));
    auto m = error_of<kalm::ModelError>([&] { CheckpointReader::open(dir.file("empty")); });
    DOCTEST_CHECK(contains(m, dir.file("empty") + ": no model.safetensors"));
  }
  DOCTEST_SUBCASE("valid index with extra unlisted tensors") {
    write_index(R"({"x": "a.safetensors", "z": "b.safetensors"})");
    auto r = CheckpointReader::open(dir.path());
    DOCTEST_CHECK(r.names() == std::vector<std::string>{"x", "y", "z"});  // y: in a shard, unlisted
    DOCTEST_CHECK(r.data("z")[0] == 3);
    DOCTEST_CHECK(r.data("y")[0] == 2);
    auto m = error_of<kalm::ModelError>([&] { r.info("w"); });
    DOCTEST_CHECK(contains(m, "no tensor named 'w'"));
    DOCTEST_CHECK_THROWS_AS(r.file_of("w"), kalm::ModelError);
  }
  DOCTEST_SUBCASE("shard missing") {
    write_index(R"({"x": "a.safetensors", "q": "missing.safetensors"})");
    auto m = error_of<kalm::ModelError>([&] { CheckpointReader::open(dir.path()); });
    DOCTEST_CHECK(contains(m, index));
    DOCTEST_CHECK(contains(m, "'missing.safetensors'"));
    DOCTEST_CHECK(contains(m, "tensor 'q'"));
  }
  DOCTEST_SUBCASE("weight_map entry not in its shard") {
    write_index(R"({"x": "a.safetensors", "w": "b.safetensors"})");
    auto m = error_of<kalm::ModelError>([&] { CheckpointReader::open(dir.path()); });
    DOCTEST_CHECK(contains(m, "tensor 'w' is listed for shard 'b.safetensors' but is not in it"));
  }
  DOCTEST_SUBCASE("weight_map points at the wrong shard") {
    write_index(R"({"x": "b.safetensors", "z": "b.safetensors", "y": "a.safetensors"})");
    auto m = error_of<kalm::ModelError>([&] { CheckpointReader::open(dir.path()); });
    DOCTEST_CHECK(contains(
        m, "tensor 'x' is listed for shard 'b.safetensors' but is in shard 'a.safetensors'"));
  }
  DOCTEST_SUBCASE("tensor in two shards") {
    write_shard(dir.file("c.safetensors"), {{"z", 4}});
    write_index(R"({"x": "a.safetensors", "z": "b.safetensors", "zz": "c.safetensors"})");
    auto m = error_of<kalm::ModelError>([&] { CheckpointReader::open(dir.path()); });
    DOCTEST_CHECK(contains(m, "tensor 'z' is in two shards: 'b.safetensors' and 'c.safetensors'"));
  }
  DOCTEST_SUBCASE("malformed shard") {
    write_bytes(dir.file("bad.safetensors"), "garbage!garbage!");
    write_index(R"({"x": "a.safetensors", "g": "bad.safetensors"})");
    auto m = error_of<kalm::FormatError>([&] { CheckpointReader::open(dir.path()); });
    DOCTEST_CHECK(contains(m, dir.file("bad.safetensors") + ": header"));
  }
  DOCTEST_SUBCASE("malformed index") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"{\"weight_map\": {", "not valid JSON"},
        {"[]", "must be a JSON object"},
        {"", "empty file"},
        {"{\"metadata\": {}}", "missing 'weight_map'"},
        {"{\"weight_map\": []}", "'weight_map' must be an object"},
        {"{\"weight_map\": {\"x\": 1}}", "tensor 'x' must be a file name string"},
        {"{\"weight_map\": {\"x\": \"a.safetensors\", \"x\": \"a.safetensors\"}}",
         "tensor 'x' appears twice"},
        {"{\"weight_map\": {\"x\": \"../a.safetensors\"}}", "relative path inside"},
        {"{\"weight_map\": {\"x\": \"/etc/passwd\"}}", "relative path inside"},
        {"{\"weight_map\": {\"x\": \"\"}}", "relative path inside"},
        {"{\"weight_map\": {}, \"weight_map\": {}}", "'weight_map' appears twice"},
    };
    for (const auto& [json, needle] : cases) {
      DOCTEST_CAPTURE(json);
      write_bytes(index, json);
      auto m = error_of<kalm::FormatError>([&] { CheckpointReader::open(dir.path()); });
      DOCTEST_CHECK(contains(m, index + ": "));
      DOCTEST_CHECK(contains(m, needle));
    }
  }
  DOCTEST_SUBCASE("model.safetensors wins over an index, as in transformers") {
    write_index(R"({"x": "missing.safetensors"})");
    write_shard(dir.file("model.safetensors"), {{"only", 7}});
    auto r = CheckpointReader::open(dir.path());
    DOCTEST_CHECK_FALSE(r.sharded());
    DOCTEST_CHECK(r.names() == std::vector<std::string>{"only"});
  }
  DOCTEST_SUBCASE("shards in a subdirectory") {
    std::filesystem::create_directory(dir.file("sub"));
    write_shard(dir.file("sub/s.safetensors"), {{"k", 5}});
    write_index(R"({"k": "sub/s.safetensors"})");
    auto r = CheckpointReader::open(dir.path());
    DOCTEST_CHECK(r.data("k")[0] == 5);
  }
}
