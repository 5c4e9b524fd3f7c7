// LibTorch adapter for safetensors: zero-copy views, dtype mapping, saving.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include "io/test_safetensors_util.h"
#include "kalm/error.h"
#include "kalm/io/safetensors.h"
#include "kalm/model/tensor_io.h"

using kalm::FormatError;
using kalm::io::CheckpointReader;
using kalm::io::DType;
using kalm::io::SafetensorsFile;
using kalm_st_test::raw_safetensors;
using kalm_st_test::TempDir;
using kalm_st_test::write_bytes;
using Named = std::vector<std::pair<std::string, torch::Tensor>>;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A tensor of `dtype` with varied, exactly representable values.
torch::Tensor sample(torch::ScalarType dtype, std::vector<std::int64_t> shape, int seed) {
  torch::manual_seed(seed);
  if (dtype == torch::kBool) return torch::randint(0, 2, shape).to(torch::kBool);
  if (dtype == torch::kByte) return torch::randint(0, 256, shape).to(dtype);
  if (torch::isIntegralType(dtype, /*includeBool=*/false))
    return torch::randint(-120, 120, shape).to(dtype);
  return (torch::randn(shape) * 100).to(dtype);
}

Named every_dtype() {
  Named out;
  int seed = 0;
  for (DType d : kalm::io::kAllDTypes) {
    const auto t = kalm::model::to_torch_dtype(d);
    const std::string base = "x." + std::string(kalm::io::dtype_name(d));
    out.emplace_back(base, sample(t, {3, 5}, ++seed));
    out.emplace_back(base + ".scalar", sample(t, {}, ++seed));
    out.emplace_back(base + ".empty", torch::empty({0, 7}, torch::TensorOptions().dtype(t)));
  }
  return out;
}

}  // namespace

DOCTEST_TEST_CASE("tensor_io: dtype mapping") {
  const std::map<DType, torch::ScalarType> expected = {
      {DType::F64, torch::kDouble},    {DType::F32, torch::kFloat}, {DType::F16, torch::kHalf},
      {DType::BF16, torch::kBFloat16}, {DType::I64, torch::kLong},  {DType::I32, torch::kInt},
      {DType::I16, torch::kShort},     {DType::I8, torch::kChar},   {DType::U8, torch::kByte},
      {DType::BOOL, torch::kBool}};
  for (const auto& [d, t] : expected) {
    DOCTEST_CHECK((kalm::model::to_torch_dtype(d) == t));  // (): doctest cannot print ScalarType
    DOCTEST_CHECK(kalm::model::try_from_torch_dtype(t) == d);
    DOCTEST_CHECK(kalm::model::from_torch_dtype(t, "ctx") == d);
    DOCTEST_CHECK(torch::elementSize(t) == kalm::io::dtype_size(d));
  }
  DOCTEST_CHECK_FALSE(kalm::model::try_from_torch_dtype(torch::kComplexFloat).has_value());
  try {
    kalm::model::from_torch_dtype(torch::kComplexDouble, "out.safetensors: tensor 'z'");
    DOCTEST_FAIL("no exception");
  } catch (const FormatError& e) {
    DOCTEST_CHECK(contains(e.what(), "out.safetensors: tensor 'z': dtype ComplexDouble"));
  }
}

DOCTEST_TEST_CASE("tensor_io: round trip of every dtype, zero-copy, outliving the reader") {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  const Named tensors = every_dtype();
  kalm::model::save_safetensors(path, tensors, {{"model", "test"}});

  std::vector<torch::Tensor> loaded;
  {
    auto file = SafetensorsFile::open(path);
    DOCTEST_CHECK(file.metadata() == std::map<std::string, std::string>{{"model", "test"}});
    DOCTEST_REQUIRE(file.tensors().size() == tensors.size());
    for (const auto& [name, original] : tensors) {
      DOCTEST_CAPTURE(name);
      torch::Tensor t = kalm::model::tensor_from(file, name);
      DOCTEST_CHECK((t.scalar_type() == original.scalar_type()));
      DOCTEST_CHECK(t.sizes() == original.sizes());
      DOCTEST_CHECK(t.device().is_cpu());
      DOCTEST_CHECK(t.is_contiguous());
      DOCTEST_CHECK(torch::equal(t, original));
      if (original.numel() > 0)  // a view of the mapping, not a copy
        DOCTEST_CHECK(t.data_ptr() == static_cast<const void*>(file.data(file.at(name))));
      loaded.push_back(t);
    }
  }
  // The SafetensorsFile is gone and the file unlinked; the views still hold the mapping.
  std::filesystem::remove(path);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    DOCTEST_CAPTURE(tensors[i].first);
    DOCTEST_CHECK(torch::equal(loaded[i], tensors[i].second));
  }
}

DOCTEST_TEST_CASE("tensor_io: bytes on disk are little-endian IEEE / bfloat16") {
  TempDir dir;
  const std::string path = dir.file("v.safetensors");
  kalm::model::save_safetensors(
      path, {{"h", torch::tensor({1.5, -2.0}, torch::kHalf)},
             {"b", torch::tensor({1.5, -2.0}, torch::kBFloat16)},
             {"i", torch::tensor({std::int64_t(0x0102030405060708)}, torch::kLong)}});
  auto file = SafetensorsFile::open(path);
  auto bytes = [&](const std::string& name) {
    const auto& info = file.at(name);
    return std::vector<int>(file.data(info), file.data(info) + info.nbytes());
  };
  DOCTEST_CHECK(bytes("h") == std::vector<int>{0x00, 0x3e, 0x00, 0xc0});
  DOCTEST_CHECK(bytes("b") == std::vector<int>{0xc0, 0x3f, 0x00, 0xc0});
  DOCTEST_CHECK(bytes("i") == std::vector<int>{8, 7, 6, 5, 4, 3, 2, 1});
}

DOCTEST_TEST_CASE("tensor_io: saving non-contiguous, offset, grad and expanded tensors") {
  TempDir dir;
  const std::string path = dir.file("views.safetensors");
  torch::Tensor base = torch::arange(24, torch::kFloat).reshape({4, 6});
  torch::Tensor param = torch::ones({2, 2}, torch::requires_grad());
  const Named tensors = {{"transposed", base.t()},
                         {"slice", base.slice(0, 1, 3).slice(1, 2, 5)},
                         {"param", param * 3},
                         {"expanded", torch::tensor({1, 2, 3}, torch::kInt).expand({2, 3})}};
  kalm::model::save_safetensors(path, tensors);
  auto file = SafetensorsFile::open(path);
  for (const auto& [name, original] : tensors) {
    DOCTEST_CAPTURE(name);
    DOCTEST_CHECK(torch::equal(kalm::model::tensor_from(file, name), original.detach()));
  }
  DOCTEST_CHECK(file.at("transposed").shape == std::vector<std::int64_t>{6, 4});
  DOCTEST_CHECK(kalm::model::tensor_from(file, "slice")[0][0].item<float>() == 8.0f);
}

DOCTEST_TEST_CASE("tensor_io: writes to a view never reach the file; tensor_copy is independent") {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  kalm::model::save_safetensors(path, {{"w", torch::tensor({1.0f, 2.0f, 3.0f})}});
  auto file = SafetensorsFile::open(path);
  torch::Tensor copy = kalm::model::tensor_copy(file, "w");
  DOCTEST_CHECK(copy.data_ptr() != static_cast<const void*>(file.data(file.at("w"))));
  copy.mul_(10);
  DOCTEST_CHECK(
      torch::equal(kalm::model::tensor_from(file, "w"), torch::tensor({1.0f, 2.0f, 3.0f})));

  torch::Tensor view = kalm::model::tensor_from(file, "w");
  view.add_(1);  // copy-on-write mapping: no fault, the file is untouched
  DOCTEST_CHECK(torch::equal(view, torch::tensor({2.0f, 3.0f, 4.0f})));
  auto reopened = SafetensorsFile::open(path);
  DOCTEST_CHECK(
      torch::equal(kalm::model::tensor_from(reopened, "w"), torch::tensor({1.0f, 2.0f, 3.0f})));
}

DOCTEST_TEST_CASE("tensor_io: misaligned data is copied, bad BOOL bytes are rejected") {
  TempDir dir;
  // A U8 byte first puts the F32 tensor at data offset 1 (another writer's layout).
  const float values[2] = {1.25f, -7.5f};
  std::string data = "\x09";
  data.append(reinterpret_cast<const char*>(values), sizeof values);
  const std::string header = R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  // Header of length 8k+... : make the data start 8-aligned so offset 1 is misaligned.
  std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  write_bytes(dir.file("m.safetensors"), raw_safetensors(padded, data));
  auto file = SafetensorsFile::open(dir.file("m.safetensors"));
  torch::Tensor f = kalm::model::tensor_from(file, "f");
  DOCTEST_CHECK(torch::equal(f, torch::tensor({1.25f, -7.5f})));
  DOCTEST_CHECK(f.data_ptr() != static_cast<const void*>(file.data(file.at("f"))));
  DOCTEST_CHECK(kalm::model::tensor_from(file, "b").item<std::uint8_t>() == 9);

  const std::string bool_header = R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})";
  write_bytes(dir.file("bool.safetensors"),
              raw_safetensors(bool_header, std::string("\x01\x00\x02", 3)));
  auto bfile = SafetensorsFile::open(dir.file("bool.safetensors"));
  try {
    kalm::model::tensor_from(bfile, "m");
    DOCTEST_FAIL("no exception");
  } catch (const FormatError& e) {
    DOCTEST_CHECK(contains(
        e.what(), dir.file("bool.safetensors") + ": tensor 'm': BOOL byte 2 at element 2"));
  }
  DOCTEST_CHECK_THROWS_AS(kalm::model::tensor_from(bfile, "absent"), FormatError);
}

DOCTEST_TEST_CASE("tensor_io: bad tensors are refused before anything is written") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  auto message = [&](const Named& tensors) -> std::string {
    try {
      kalm::model::save_safetensors(path, tensors);
    } catch (const FormatError& e) {
      return e.what();
    }
    return "<no exception>";
  };
  const torch::Tensor ok = torch::zeros({2});
  DOCTEST_CHECK(contains(message({{"ok", ok}, {"c", torch::zeros({2}, torch::kComplexFloat)}}),
                         "tensor 'c': dtype ComplexFloat"));
  DOCTEST_CHECK(contains(message({{"u", torch::Tensor()}}), "tensor 'u': undefined"));
  DOCTEST_CHECK(contains(message({{"s", torch::eye(3).to_sparse()}}), "tensor 's': only dense"));
  DOCTEST_CHECK(contains(message({{"d", ok}, {"d", ok}}), "tensor 'd': added twice"));
  DOCTEST_CHECK(contains(message({{"", ok}}), "empty tensor name"));
  DOCTEST_CHECK(dir.list().empty());
}

DOCTEST_TEST_CASE("tensor_io: sharded checkpoint round trip") {
  TempDir dir;
  const Named tensors = every_dtype();
  // 3x5 doubles are 120 bytes: a 128-byte limit forces many shards.
  auto written = kalm::model::save_checkpoint(dir.path(), tensors, {{"kalm", "1"}}, 128);
  DOCTEST_CHECK(written.size() > 3);
  DOCTEST_CHECK(written.back() == "model.safetensors.index.json");
  auto checkpoint = CheckpointReader::open(dir.path());
  DOCTEST_CHECK(checkpoint.sharded());
  auto all = kalm::model::load_all(checkpoint);
  DOCTEST_REQUIRE(all.size() == tensors.size());
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  for (const auto& [name, t] : all) {
    DOCTEST_CAPTURE(name);
    DOCTEST_CHECK(torch::equal(t, by_name.at(name)));
    DOCTEST_CHECK(checkpoint.file_of(name).metadata_value("kalm") ==
                  std::optional<std::string>("1"));
  }
  DOCTEST_CHECK(torch::equal(kalm::model::tensor_copy(checkpoint, "x.BF16"), by_name.at("x.BF16")));
  DOCTEST_CHECK_THROWS_AS(kalm::model::tensor_from(checkpoint, "nope"), kalm::ModelError);

  auto single = SafetensorsFile::open(dir.file(written[0]));
  auto from_file = kalm::model::load_all(single);
  DOCTEST_CHECK(from_file.size() == single.tensors().size());
  DOCTEST_CHECK(from_file.front().first == single.tensors().front().name);
}

DOCTEST_TEST_CASE("load_embedding_matrix checks the tensor and converts to f32") {
  const std::string path = (std::filesystem::temp_directory_path() / ("kalm_emb_test_" + std::to_string(::getpid()) + ".safetensors")).string();
  const float rows[] = {1, 0, 0, 1, 0.5f, 0.5f};
  DOCTEST_SUBCASE("f32 [3, 2]") {
    kalm::io::SafetensorsWriter w;
    w.add("embeddings", kalm::io::DType::F32, {3, 2}, rows, sizeof rows);
    w.write(path);
    auto t = kalm::model::load_embedding_matrix(path, 3, "rows");
    DOCTEST_CHECK((t.scalar_type() == torch::kFloat32));
    DOCTEST_CHECK(t.size(0) == 3);
    DOCTEST_CHECK(t[2][1].item<float>() == 0.5f);
    DOCTEST_CHECK_THROWS_WITH_AS(kalm::model::load_embedding_matrix(path, 4, "one per group"),
                                 doctest::Contains("has 3 rows, expected 4: one per group"), kalm::FormatError);
  }
  DOCTEST_SUBCASE("f16 is converted") {
    const std::uint16_t half[] = {0x3C00, 0x3800};  // 1.0, 0.5
    kalm::io::SafetensorsWriter w;
    w.add("embeddings", kalm::io::DType::F16, {1, 2}, half, sizeof half);
    w.write(path);
    auto t = kalm::model::load_embedding_matrix(path, 1, "rows");
    DOCTEST_CHECK((t.scalar_type() == torch::kFloat32));
    DOCTEST_CHECK(t[0][1].item<float>() == 0.5f);
  }
  DOCTEST_SUBCASE("wrong name, rank or dtype") {
    kalm::io::SafetensorsWriter w;
    w.add("vectors", kalm::io::DType::F32, {3, 2}, rows, sizeof rows);
    w.write(path);
    DOCTEST_CHECK_THROWS_WITH_AS(kalm::model::load_embedding_matrix(path, 3, "rows"),
                                 doctest::Contains("no tensor named 'embeddings'"), kalm::FormatError);
    kalm::io::SafetensorsWriter w1;
    w1.add("embeddings", kalm::io::DType::F32, {6}, rows, sizeof rows);
    w1.write(path);
    DOCTEST_CHECK_THROWS_AS(kalm::model::load_embedding_matrix(path, 6, "rows"), kalm::FormatError);
    const std::int32_t ints[] = {1, 2};
    kalm::io::SafetensorsWriter w2;
    w2.add("embeddings", kalm::io::DType::I32, {1, 2}, ints, sizeof ints);
    w2.write(path);
    DOCTEST_CHECK_THROWS_AS(kalm::model::load_embedding_matrix(path, 1, "rows"), kalm::FormatError);
  }
  DOCTEST_SUBCASE("a NaN or infinite value names its row") {
    const float bad[] = {1, 0, 0, 1, 0.5f, std::numeric_limits<float>::quiet_NaN()};
    kalm::io::SafetensorsWriter w;
    w.add("embeddings", kalm::io::DType::F32, {3, 2}, bad, sizeof bad);
    w.write(path);
    DOCTEST_CHECK_THROWS_WITH_AS(kalm::model::load_embedding_matrix(path),
                                 (path + ": row 2 of tensor 'embeddings' is NaN or infinite (1 non-finite value (NaN or "
                                         "infinity; the first at flat index 5))").c_str(),
                                 kalm::FormatError);
  }
  std::filesystem::remove(path);
}

