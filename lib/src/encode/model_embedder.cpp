#include "kalm/encode/model_embedder.h"

#include <filesystem>

#include "kalm/error.h"
#include "kalm/model/checkpoint.h"
#include "kalm/model/device.h"
#include "kalm/model/pooling.h"
#include "kalm/model/transformer.h"

namespace kalm::encode {
namespace {

namespace fs = std::filesystem;

bool has_tokenizer_files(const std::string& dir) {
  return fs::exists(fs::path(dir) / "tokenizer.json") || fs::exists(fs::path(dir) / "tokenizer.model");
}

class EncoderEmbedder : public BatchEmbedder {
 public:
  EncoderEmbedder(model::LoadedModel loaded, model::Pooling pooling, std::int64_t pad_id)
      : loaded_(std::move(loaded)), pooling_(pooling), pad_id_(pad_id) {}

  torch::Tensor embed(const torch::Tensor& ids, const torch::Tensor& mask) override {
    // Unnormalised: the engine's caller truncates (Matryoshka) before normalising.
    return loaded_.encoder->embed(ids, mask, pooling_, /*normalize=*/false);
  }
  torch::Device device() const override { return loaded_.encoder->device(); }
  std::int64_t pad_id() const override { return pad_id_; }

 private:
  model::LoadedModel loaded_;
  model::Pooling pooling_;
  std::int64_t pad_id_;
};

}  // namespace

std::int64_t resolve_max_length(const std::optional<std::int64_t>& flag,
                                const std::optional<std::int64_t>& model_max_seq_length) {
  if (flag) {
    if (*flag <= 0) throw UsageError("--max-length must be positive, got " + std::to_string(*flag));
    return *flag;
  }
  if (model_max_seq_length) {
    KALM_ASSERT(*model_max_seq_length > 0, "read_sentence_transformers checks max_seq_length");
    return *model_max_seq_length;
  }
  return kDefaultMaxLength;
}

std::unique_ptr<text::Tokenizer> load_tokenizer_only(const std::string& model_dir) {
  if (!fs::is_directory(model_dir)) throw ModelError(model_dir + ": no such model directory");
  return text::load_tokenizer(model_dir);
}

LoadedEmbedder load_embedder(const std::string& model_dir, const EmbedderSettings& settings,
                             bool require_tokenizer) {
  if (!fs::is_directory(model_dir)) throw ModelError(model_dir + ": no such model directory");
  model::LoadOptions options;
  options.device = model::parse_device(settings.device);
  options.dtype = model::parse_compute_dtype(settings.dtype);
  if (!settings.attention.empty()) options.attention = model::parse_attention_mode(settings.attention);
  model::LoadedModel loaded = model::load_model(model_dir, options);

  LoadedEmbedder out;
  if (require_tokenizer || has_tokenizer_files(model_dir)) out.tokenizer = text::load_tokenizer(model_dir);

  // Pooling: the flag, else the sentence-transformers config, else the family's
  // KaLM default (Qwen2 models are mean-pooled, KaLM-Embedding-Gemma3 last-token).
  model::Pooling pooling;
  if (!settings.pooling.empty()) {
    pooling = model::parse_pooling(settings.pooling);
  } else if (loaded.sentence_transformers.pooling) {
    pooling = *loaded.sentence_transformers.pooling;
  } else {
    pooling = loaded.config.architecture == model::Architecture::Gemma3 ? model::Pooling::LastToken
                                                                          : model::Pooling::Mean;
  }
  if (!loaded.sentence_transformers.include_prompt)
    throw ModelError(model_dir + ": the pooling config sets include_prompt=false (prompt tokens left out of the "
                     "pooling), which kalm does not implement yet; embeddings would differ from "
                     "sentence-transformers'");

  out.dim = loaded.config.hidden_size;
  out.vocab_size = loaded.config.vocab_size;
  out.prompts = loaded.sentence_transformers.prompts;
  out.default_prompt_name = loaded.sentence_transformers.default_prompt_name.value_or("");
  out.pooling = std::string(model::pooling_name(pooling));
  out.attention = std::string(model::attention_mode_name(loaded.encoder->attention()));
  out.max_seq_length = loaded.sentence_transformers.max_seq_length;
  std::int64_t pad = 0;
  if (out.tokenizer && out.tokenizer->pad_id()) pad = *out.tokenizer->pad_id();
  if (pad < 0 || pad >= out.vocab_size) pad = 0;  // padded ids are masked; any valid id will do
  out.embedder = std::make_unique<EncoderEmbedder>(std::move(loaded), pooling, pad);
  return out;
}

}  // namespace kalm::encode
