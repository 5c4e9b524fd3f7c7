#include "kalm/train/export.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "kalm/error.h"
#include "kalm/io/atomic_file.h"
#include "kalm/io/json_writer.h"

namespace kalm::train {
namespace fs = std::filesystem;

void write_text_file(const std::string& path, const std::string& text) {
  io::AtomicOutputFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

void write_sentence_transformers_files(const std::string& dir, const SentenceTransformersExport& spec) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "1_Pooling", ec);
  if (ec) throw IoError(dir + "/1_Pooling: cannot create directory: " + ec.message());
  write_text_file(dir + "/modules.json",
                  "[\n"
                  "  {\"idx\": 0, \"name\": \"0\", \"path\": \"\", \"type\": \"sentence_transformers.models.Transformer\"},\n"
                  "  {\"idx\": 1, \"name\": \"1\", \"path\": \"1_Pooling\", \"type\": \"sentence_transformers.models.Pooling\"},\n"
                  "  {\"idx\": 2, \"name\": \"2\", \"path\": \"2_Normalize\", \"type\": \"sentence_transformers.models.Normalize\"}\n"
                  "]\n");
  auto flag = [](bool b) { return b ? "true" : "false"; };
  std::ostringstream pool;
  pool << "{\n  \"word_embedding_dimension\": " << spec.dimension << ",\n"
       << "  \"pooling_mode_cls_token\": " << flag(spec.pooling == model::Pooling::Cls) << ",\n"
       << "  \"pooling_mode_mean_tokens\": " << flag(spec.pooling == model::Pooling::Mean) << ",\n"
       << "  \"pooling_mode_max_tokens\": false,\n  \"pooling_mode_mean_sqrt_len_tokens\": false,\n"
       << "  \"pooling_mode_weightedmean_tokens\": false,\n"
       << "  \"pooling_mode_lasttoken\": " << flag(spec.pooling == model::Pooling::LastToken) << ",\n"
       << "  \"include_prompt\": " << flag(spec.include_prompt) << "\n}\n";
  write_text_file(dir + "/1_Pooling/config.json", pool.str());
  write_text_file(dir + "/sentence_bert_config.json",
                  "{\"max_seq_length\": " + std::to_string(spec.max_seq_length) + ", \"do_lower_case\": false}\n");
  std::string st = "{\n  \"prompts\": {";
  bool first = true;
  for (const auto& [name, text] : spec.prompts) {
    st += first ? "\n    " : ",\n    ";
    first = false;
    io::append_json_string(st, name);
    st += ": ";
    io::append_json_string(st, text);
  }
  st += first ? "},\n" : "\n  },\n";
  st += "  \"default_prompt_name\": null,\n  \"similarity_fn_name\": \"cosine\"\n}\n";
  write_text_file(dir + "/config_sentence_transformers.json", st);
}

void copy_tokenizer_files(const std::string& from, const std::string& to) {
  if (!fs::exists(fs::path(from) / "tokenizer.json") && !fs::exists(fs::path(from) / "tokenizer.model"))
    throw ModelError(from + ": no tokenizer.json or tokenizer.model to copy into the trained model");
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                           "vocab.json", "merges.txt", "added_tokens.json"}) {
    const fs::path src = fs::path(from) / name;
    if (!fs::exists(src)) continue;
    if (fs::exists(fs::path(to) / name) && fs::equivalent(src, fs::path(to) / name)) continue;
    std::ifstream in(src, std::ios::binary);
    if (!in) throw IoError(src.string() + ": cannot read");
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw IoError(src.string() + ": read failed");
    write_text_file((fs::path(to) / name).string(), bytes);
  }
}

}  // namespace kalm::train
