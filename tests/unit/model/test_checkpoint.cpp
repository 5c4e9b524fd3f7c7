// Loading and saving model directories: prefixes, shards, storage dtypes, the
// sentence-transformers files, and every way a directory can be broken.

#include <doctest/doctest.h>

#include <filesystem>
#include <limits>
#include <string>

#include "kalm/error.h"
#include "kalm/io/remove_tree.h"
#include "kalm/model/checkpoint.h"
#include "model_test_util.h"

using kalm::ModelError;
using kalm::model::AttentionMode;
using kalm::model::Pooling;
using kalm_model_test::contains;
using kalm_model_test::copy_fixture;
using kalm_model_test::edit_file;
using kalm_model_test::expected;
using kalm_model_test::fixture;
using kalm_model_test::max_abs_diff;
using kalm_model_test::message_of;
using kalm_model_test::TempDir;

namespace fs = std::filesystem;

namespace {

// Rewrites <dir>/model.safetensors with `edit` applied to its tensor list.
template <class Edit>
void rewrite_weights(const std::string& dir, Edit&& edit) {
  const std::string path = dir + "/model.safetensors";
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  {
    const auto file = kalm::io::SafetensorsFile::open(path);
    for (auto& [name, t] : kalm::model::load_all(file)) tensors.emplace_back(name, t.clone());
  }
  edit(tensors);
  kalm::model::save_safetensors(path, tensors, {{"format", "pt"}});
}

}  // namespace

DOCTEST_TEST_CASE("checkpoint: sentence-transformers files are read") {
  const auto model = kalm::model::load_model(fixture("qwen2_causal"));
  const auto& st = model.sentence_transformers;
  DOCTEST_CHECK(st.present());
  DOCTEST_REQUIRE(st.modules.size() == 3);
  DOCTEST_CHECK(st.modules[1].path == "1_Pooling");
  DOCTEST_CHECK(st.pooling == Pooling::Mean);
  DOCTEST_CHECK(st.normalize);
  DOCTEST_CHECK(st.include_prompt);
  DOCTEST_CHECK(st.word_embedding_dimension == 64);
  DOCTEST_CHECK(st.prompts.at("query") ==
                "Instruct: Given a query, retrieve documents that answer the query \n Query: ");
  DOCTEST_CHECK(st.prompts.at("document").empty());
  DOCTEST_CHECK(!st.default_prompt_name);
  DOCTEST_CHECK(st.similarity_fn_name == "cosine");
}

DOCTEST_TEST_CASE("checkpoint: a directory without sentence-transformers files loads with none") {
  TempDir tmp;
  const std::string dir = copy_fixture("gemma3_bidir", tmp);
  kalm::io::remove_tree_nothrow(std::filesystem::path(dir + "/1_Pooling").string());
  fs::remove(dir + "/modules.json");
  fs::remove(dir + "/config_sentence_transformers.json");
  const auto model = kalm::model::load_model(dir);
  DOCTEST_CHECK(!model.sentence_transformers.present());
  DOCTEST_CHECK(!model.sentence_transformers.pooling);
}

DOCTEST_TEST_CASE("checkpoint: save then load reproduces the model, in f32 and bf16") {
  torch::NoGradGuard no_grad;
  const char* const names[] = {"qwen2_causal", "qwen2_bidir", "gemma3_causal", "gemma3_bidir"};
  for (const char* name : names) {
    const std::string fixture_name = name;
    DOCTEST_CAPTURE(fixture_name);
    const auto model = kalm::model::load_model(fixture(name));
    const torch::Tensor ids = expected(name, "input_ids");
    const torch::Tensor mask = expected(name, "attention_mask");
    const torch::Tensor before = model.encoder->forward(ids, mask);

    TempDir tmp;
    kalm::model::save_model(tmp.path(), *model.encoder);
    DOCTEST_CHECK(fs::exists(tmp.file("config.json")));
    DOCTEST_CHECK(fs::exists(tmp.file("model.safetensors")));
    const auto reloaded = kalm::model::load_model(tmp.path());
    DOCTEST_CHECK(reloaded.weights_prefix == "");
    DOCTEST_CHECK(reloaded.encoder->attention() == model.encoder->attention());
    DOCTEST_CHECK((reloaded.config.layer_types == model.config.layer_types));
    DOCTEST_CHECK(reloaded.config.sliding_window == model.config.sliding_window);
    DOCTEST_CHECK(reloaded.config.rope_scaling.factor == model.config.rope_scaling.factor);
    DOCTEST_CHECK(reloaded.config.torch_dtype == "float32");
    DOCTEST_CHECK(max_abs_diff(reloaded.encoder->forward(ids, mask), before) == 0.0);

    // Stored as bf16: the weights are the rounded values, the output stays close.
    TempDir tmp16;
    kalm::model::SaveOptions bf16;
    bf16.dtype = torch::kBFloat16;
    kalm::model::save_model(tmp16.path(), *model.encoder, bf16);
    const auto file = kalm::io::SafetensorsFile::open(tmp16.file("model.safetensors"));
    DOCTEST_CHECK(file.at("norm.weight").dtype == kalm::io::DType::BF16);
    const auto reloaded16 = kalm::model::load_model(tmp16.path());
    DOCTEST_CHECK(reloaded16.config.torch_dtype == "bfloat16");
    const torch::Tensor a = reloaded16.encoder->embed(ids, mask, Pooling::Mean);
    const torch::Tensor b = model.encoder->embed(ids, mask, Pooling::Mean);
    DOCTEST_CHECK((a * b).sum(1).min().item<double>() >= 0.99);
  }
}

DOCTEST_TEST_CASE("checkpoint: sharded saves reload") {
  torch::NoGradGuard no_grad;
  const auto model = kalm::model::load_model(fixture("qwen2_causal"));
  TempDir tmp;
  kalm::model::SaveOptions opts;
  opts.max_shard_bytes = 200'000;
  kalm::model::save_model(tmp.path(), *model.encoder, opts);
  DOCTEST_CHECK(fs::exists(tmp.file("model.safetensors.index.json")));
  DOCTEST_CHECK(!fs::exists(tmp.file("model.safetensors")));
  const auto reloaded = kalm::model::load_model(tmp.path());
  const torch::Tensor ids = expected("qwen2_causal", "input_ids");
  const torch::Tensor mask = expected("qwen2_causal", "attention_mask");
  DOCTEST_CHECK(max_abs_diff(reloaded.encoder->embed(ids, mask, Pooling::Mean),
                             expected("qwen2_causal", "embeddings_mean")) <= 1e-5);
}

DOCTEST_TEST_CASE("checkpoint: broken model directories are refused with the file named") {
  TempDir tmp;
  const std::string dir = copy_fixture("qwen2_causal", tmp);

  DOCTEST_SUBCASE("not a directory") {
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir + "/nope"); });
    DOCTEST_CHECK(contains(msg, "nope"));
  }
  DOCTEST_SUBCASE("missing config.json") {
    fs::remove(dir + "/config.json");
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "config.json"));
  }
  DOCTEST_SUBCASE("config.json is not JSON") {
    kalm_model_test::write_file(dir + "/config.json", "{\"model_type\": \"qwen2\",");
    const auto msg = message_of<kalm::FormatError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "config.json"));
  }
  DOCTEST_SUBCASE("unknown model_type") {
    edit_file(dir + "/config.json", "\"qwen2\"", "\"llama\"");
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "config.json"));
    DOCTEST_CHECK(contains(msg, "llama"));
  }
  DOCTEST_SUBCASE("no weights") {
    fs::remove(dir + "/model.safetensors");
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "model"));
  }
  DOCTEST_SUBCASE("truncated safetensors") {
    fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 100);
    const auto msg = message_of<kalm::FormatError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "model.safetensors"));
  }
  DOCTEST_SUBCASE("missing tensor") {
    rewrite_weights(dir, [](auto& tensors) {
      tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                   [](const auto& t) { return t.first == "model.layers.1.mlp.up_proj.weight"; }),
                    tensors.end());
    });
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "model.safetensors"));
    DOCTEST_CHECK(contains(msg, "'model.layers.1.mlp.up_proj.weight'"));
    DOCTEST_CHECK(contains(msg, "[64, 64]"));
  }
  DOCTEST_SUBCASE("wrong shape") {
    rewrite_weights(dir, [](auto& tensors) {
      for (auto& [name, t] : tensors)
        if (name == "model.layers.0.self_attn.k_proj.weight") t = torch::zeros({16, 64});
    });
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "model.safetensors"));
    DOCTEST_CHECK(contains(msg, "'model.layers.0.self_attn.k_proj.weight'"));
    DOCTEST_CHECK(contains(msg, "[16, 64]"));
    DOCTEST_CHECK(contains(msg, "[32, 64]"));
  }
  DOCTEST_SUBCASE("vocabulary and embedding sizes disagree") {
    edit_file(dir + "/config.json", "\"vocab_size\": 512", "\"vocab_size\": 600");
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "embed_tokens.weight"));
    DOCTEST_CHECK(contains(msg, "512 rows"));
    DOCTEST_CHECK(contains(msg, "vocab_size 600"));
  }
  DOCTEST_SUBCASE("more layers in the weights than in the config") {
    edit_file(dir + "/config.json", "\"num_hidden_layers\": 3", "\"num_hidden_layers\": 2");
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "unexpected tensor 'model.layers.2."));
  }
  DOCTEST_SUBCASE("integer weights") {
    rewrite_weights(dir, [](auto& tensors) {
      for (auto& [name, t] : tensors)
        if (name == "model.norm.weight") t = torch::ones({64}, torch::kInt);
    });
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "'model.norm.weight'"));
    DOCTEST_CHECK(contains(msg, "I32"));
  }
  DOCTEST_SUBCASE("unsupported pooling") {
    edit_file(dir + "/1_Pooling/config.json", "\"pooling_mode_max_tokens\": false",
              "\"pooling_mode_max_tokens\": true");
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "1_Pooling/config.json"));
    DOCTEST_CHECK(contains(msg, "pooling_mode_max_tokens"));
  }
  DOCTEST_SUBCASE("malformed prompts") {
    edit_file(dir + "/config_sentence_transformers.json", "\"document\": \"\"", "\"document\": 3");
    const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
    DOCTEST_CHECK(contains(msg, "config_sentence_transformers.json"));
    DOCTEST_CHECK(contains(msg, "prompts.document"));
  }
  DOCTEST_SUBCASE("unsupported compute dtype") {
    kalm::model::LoadOptions opts;
    opts.dtype = torch::kHalf;
    DOCTEST_CHECK_THROWS_AS(kalm::model::load_model(dir, opts), kalm::UsageError);
  }
}

DOCTEST_TEST_CASE("checkpoint: a missing shard is refused") {
  TempDir tmp;
  const std::string dir = copy_fixture("qwen2_bidir", tmp);
  fs::remove(dir + "/model-00002-of-00002.safetensors");
  DOCTEST_CHECK_THROWS_AS(kalm::model::load_model(dir), ModelError);
}

DOCTEST_TEST_CASE("checkpoint: a NaN or infinite weight is refused at load naming the tensor, and never saved") {
  TempDir tmp;
  const std::string dir = copy_fixture("qwen2_causal", tmp);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    DOCTEST_CAPTURE(bad);
    // Written byte for byte (kalm's own writers refuse it, below), in bf16 and f32.
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      const std::string path = dir + "/model.safetensors";
      std::vector<torch::Tensor> keep;
      kalm::io::SafetensorsWriter writer;
      {
        const auto file = kalm::io::SafetensorsFile::open(path);
        for (auto& [name, t] : kalm::model::load_all(file)) {
          torch::Tensor c = t.to(dtype).contiguous().clone();
          if (name == "model.layers.1.mlp.up_proj.weight") c.view(-1)[70] = bad;
          writer.add(name, kalm::model::from_torch_dtype(c.scalar_type(), name), {c.sizes().begin(), c.sizes().end()},
                     c.data_ptr(), static_cast<std::uint64_t>(c.numel() * c.element_size()));
          keep.push_back(c);
        }
      }
      writer.write(path);
      const auto msg = message_of<ModelError>([&] { kalm::model::load_model(dir); });
      DOCTEST_CHECK(msg == dir + "/model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' has 1 non-finite "
                               "value (NaN or infinity; the first at flat index 70); the checkpoint is damaged");
    }
  }
  // kalm's writers refuse to save such a tensor at all.
  auto t = torch::ones({3, 4});
  t[2][1] = std::numeric_limits<float>::quiet_NaN();
  t[2][3] = std::numeric_limits<float>::infinity();
  const auto msg = message_of<kalm::FormatError>(
      [&] { kalm::model::save_safetensors(tmp.path() + "/x.safetensors", {{"w", t}}); });
  DOCTEST_CHECK(msg == "safetensors writer: tensor 'w' has 2 non-finite values (NaN or infinity; the first at flat "
                       "index 9); not written");
  DOCTEST_CHECK_FALSE(fs::exists(tmp.path() + "/x.safetensors"));
}

DOCTEST_TEST_CASE("checkpoint: on CPU the token embedding is the file's mapping when the dtypes agree, copy-on-write") {
  torch::NoGradGuard no_grad;
  const auto model = kalm::model::load_model(fixture("qwen2_causal"));
  TempDir tmp;
  kalm::model::SaveOptions bf16;
  bf16.dtype = torch::kBFloat16;
  kalm::model::save_model(tmp.path(), *model.encoder, bf16);
  const torch::Tensor ids = expected("qwen2_causal", "input_ids");
  const torch::Tensor mask = expected("qwen2_causal", "attention_mask");

  kalm::model::LoadOptions as_bf16;
  as_bf16.dtype = torch::kBFloat16;
  const auto mapped = kalm::model::load_model(tmp.path(), as_bf16);
  DOCTEST_CHECK((mapped.mapped_parameters == std::vector<std::string>{"embed_tokens.weight"}));
  const auto file = kalm::io::SafetensorsFile::open(tmp.file("model.safetensors"));
  const torch::Tensor stored = kalm::model::tensor_from(file, "embed_tokens.weight");
  DOCTEST_CHECK(torch::equal(mapped.encoder->embed_tokens->weight, stored));
  // A bf16 file computed in f32 is converted, so it cannot be the mapping.
  const auto converted = kalm::model::load_model(tmp.path());
  DOCTEST_CHECK(converted.mapped_parameters.empty());
  DOCTEST_CHECK((converted.encoder->embed_tokens->weight.scalar_type() == torch::kFloat32));
  // Same numbers either way: the mapped model embeds as the converted one
  // rounded to bf16 does (the weights are identical bf16 values).
  const auto copied = kalm::model::load_model(tmp.path(), as_bf16);
  DOCTEST_CHECK(max_abs_diff(mapped.encoder->embed(ids, mask, Pooling::Mean),
                             copied.encoder->embed(ids, mask, Pooling::Mean)) == 0.0);
  // Writing to the mapped parameter (as training does) changes neither the
  // file nor another model loaded from it.
  mapped.encoder->embed_tokens->weight.mul_(2);
  const auto again = kalm::model::load_model(tmp.path(), as_bf16);
  DOCTEST_CHECK(torch::equal(again.encoder->embed_tokens->weight, stored));
  DOCTEST_CHECK(torch::equal(kalm::model::tensor_from(kalm::io::SafetensorsFile::open(tmp.file("model.safetensors")),
                                                      "embed_tokens.weight"),
                             stored));
  DOCTEST_CHECK(torch::equal(mapped.encoder->embed_tokens->weight, stored * 2));
}
