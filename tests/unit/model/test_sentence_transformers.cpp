// sentence_bert_config.json: the token limit sentence-transformers truncates to,
// and the lowercasing kalm refuses rather than silently skips.

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "kalm/error.h"
#include "kalm/io/remove_tree.h"
#include "kalm/model/sentence_transformers.h"
#include "model_test_util.h"

using kalm::ModelError;
using kalm::model::read_max_seq_length;
using kalm::model::read_sentence_transformers;
using kalm_model_test::contains;
using kalm_model_test::copy_fixture;
using kalm_model_test::TempDir;
using kalm_model_test::write_file;

namespace {

std::string model_error_of(const std::string& dir) {
  return kalm_model_test::message_of<ModelError>([&] { read_sentence_transformers(dir); });
}

}  // namespace

DOCTEST_TEST_CASE("sentence_bert_config.json: max_seq_length is read") {
  TempDir tmp;
  const std::string dir = copy_fixture("qwen2_causal", tmp);
  const std::string path = dir + "/sentence_bert_config.json";
  DOCTEST_SUBCASE("absent file: unset") {
    DOCTEST_CHECK(!read_sentence_transformers(dir).max_seq_length);
    DOCTEST_CHECK(!read_max_seq_length(dir));
  }
  DOCTEST_SUBCASE("a positive integer") {
    write_file(path, "{\"max_seq_length\": 24, \"do_lower_case\": false}\n");
    DOCTEST_CHECK(read_sentence_transformers(dir).max_seq_length == 24);
    DOCTEST_CHECK(read_max_seq_length(dir) == 24);
  }
  DOCTEST_SUBCASE("sentence-transformers 6's text-only modality_config") {
    write_file(path, "{\"max_seq_length\": 32, \"modality_config\": {\"text\": {\"method\": \"forward\", "
                     "\"method_output_name\": \"last_hidden_state\"}}, \"module_output_name\": \"token_embeddings\"}");
    DOCTEST_CHECK(read_max_seq_length(dir) == 32);
  }
  DOCTEST_SUBCASE("an integral float, as some writers store sizes") {
    write_file(path, "{\"max_seq_length\": 8192.0}");
    DOCTEST_CHECK(read_max_seq_length(dir) == 8192);
  }
  DOCTEST_SUBCASE("null or absent: unset") {
    write_file(path, "{\"max_seq_length\": null, \"do_lower_case\": false}");
    DOCTEST_CHECK(!read_max_seq_length(dir));
    write_file(path, "{\"do_lower_case\": false}");
    DOCTEST_CHECK(!read_max_seq_length(dir));
    write_file(path, "{}");
    DOCTEST_CHECK(!read_sentence_transformers(dir).max_seq_length);
  }
  DOCTEST_SUBCASE("the file alone makes the config present") {
    std::filesystem::remove(dir + "/modules.json");
    kalm::io::remove_tree_nothrow(std::filesystem::path(dir + "/1_Pooling").string());
    std::filesystem::remove(dir + "/config_sentence_transformers.json");
    DOCTEST_CHECK(!read_sentence_transformers(dir).present());
    write_file(path, "{\"max_seq_length\": 128}");
    DOCTEST_CHECK(read_sentence_transformers(dir).present());
  }
}

DOCTEST_TEST_CASE("sentence_bert_config.json: bad values are ModelErrors naming the file") {
  TempDir tmp;
  const std::string dir = copy_fixture("qwen2_causal", tmp);
  const std::string path = dir + "/sentence_bert_config.json";
  struct Case {
    const char* text;
    const char* says;
  };
  const Case cases[] = {
      {"{\"max_seq_length\": 0}", "max_seq_length must be a positive integer, got 0"},
      {"{\"max_seq_length\": -5}", "max_seq_length must be a positive integer, got -5"},
      {"{\"max_seq_length\": \"512\"}", "max_seq_length: expected an integer"},
      {"{\"max_seq_length\": 12.5}", "max_seq_length: expected an integer"},
      {"{\"max_seq_length\": true}", "max_seq_length: expected an integer"},
      {"{\"max_seq_length\": 24, \"do_lower_case\": \"no\"}", "do_lower_case: expected true or false"},
      {"[24]", "expected a JSON object"},
      // sentence-transformers 6 with a chat-template tokenizer: texts go through the template.
      {"{\"max_seq_length\": 512, \"modality_config\": {\"text\": {\"method\": \"forward\"}, "
       "\"message\": {\"method\": \"forward\", \"format\": \"flat\"}}}",
       "modality_config has \"message\": sentence-transformers renders every text through the tokenizer's chat template"},
  };
  for (const Case& c : cases) {
    DOCTEST_CAPTURE(c.text);
    write_file(path, c.text);
    const std::string msg = model_error_of(dir);
    DOCTEST_CHECK(contains(msg, "sentence_bert_config.json"));
    DOCTEST_CHECK(contains(msg, c.says));
    DOCTEST_CHECK_THROWS_AS(read_max_seq_length(dir), ModelError);
  }
  DOCTEST_SUBCASE("invalid JSON") {
    write_file(path, "{\"max_seq_length\": ");
    DOCTEST_CHECK_THROWS_AS(read_sentence_transformers(dir), kalm::FormatError);
  }
}

DOCTEST_TEST_CASE("sentence_bert_config.json: do_lower_case=true is refused, false is fine") {
  TempDir tmp;
  const std::string dir = copy_fixture("qwen2_causal", tmp);
  const std::string path = dir + "/sentence_bert_config.json";
  write_file(path, "{\"max_seq_length\": 24, \"do_lower_case\": true}");
  const std::string msg = model_error_of(dir);
  DOCTEST_CHECK(contains(msg, "sentence_bert_config.json"));
  DOCTEST_CHECK(contains(msg, "do_lower_case"));
  DOCTEST_CHECK(contains(msg, "lowercases"));
  write_file(path, "{\"max_seq_length\": 24, \"do_lower_case\": false}");
  DOCTEST_CHECK(read_sentence_transformers(dir).max_seq_length == 24);
}
