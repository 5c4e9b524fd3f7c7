#include "kalm/encode/model_embedder.h"

#include <filesystem>

#include "kalm/core/launcher.h"
#include "kalm/error.h"
#include "kalm/model/checkpoint.h"
#include "kalm/model/config.h"
#include "kalm/model/device.h"
#include "kalm/model/pooling.h"
#include "kalm/model/sentence_transformers.h"
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

  torch::Tensor embed(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& pool_mask) override {
    // Unnormalised: the engine's caller truncates (Matryoshka) before normalising.
    // The engine checked on the host that every row pools at least one token,
    // so pooling need not wait for the device to check it again.
    const torch::Tensor hidden = loaded_.encoder->forward(ids, mask);
    return model::pool(hidden, pool_mask.to(hidden.device(), /*non_blocking=*/true), pooling_,
                       model::EmptyRows::kCheckedByCaller);
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

std::optional<std::int64_t> sentence_transformers_max_length(const std::string& model_dir,
                                                             const text::Tokenizer* tokenizer, std::string& source) {
  const fs::path dir(model_dir);
  if (auto limit = model::read_max_seq_length(model_dir)) {
    source = "max_seq_length " + std::to_string(*limit) + " from " + (dir / "sentence_bert_config.json").string();
    return limit;
  }
  if (!fs::exists(dir / "modules.json")) return std::nullopt;
  std::optional<std::int64_t> limit;
  const fs::path config = dir / "config.json";
  if (fs::exists(config)) {
    limit = model::parse_config_file(config.string()).max_position_embeddings;
    source = "max_position_embeddings " + std::to_string(*limit) + " from " + config.string();
  }
  if (tokenizer && tokenizer->model_max_length() &&
      (!limit || static_cast<std::int64_t>(*tokenizer->model_max_length()) < *limit)) {
    limit = static_cast<std::int64_t>(*tokenizer->model_max_length());
    source = "model_max_length " + std::to_string(*limit) + " from " + (dir / "tokenizer_config.json").string();
  }
  return limit;
}

std::unique_ptr<text::Tokenizer> load_tokenizer_only(const std::string& model_dir) {
  if (!fs::is_directory(model_dir)) throw ModelError(model_dir + ": no such model directory");
  return text::load_tokenizer(model_dir);
}

torch::Device device_for_this_process(const std::string& name) {
  const torch::Device device = model::parse_device(name);
  if (const auto local_rank = core::read_launch_environment(core::process_env).local_rank)
    return model::device_for_local_rank(device, *local_rank);
  return device;
}

LoadedEmbedder load_embedder(const std::string& model_dir, const EmbedderSettings& settings,
                             bool require_tokenizer) {
  if (!fs::is_directory(model_dir)) throw ModelError(model_dir + ": no such model directory");
  model::LoadOptions options;
  options.device = device_for_this_process(settings.device);
  options.dtype = model::parse_compute_dtype(settings.dtype);
  if (settings.dtype == "tf32") model::enable_tf32(options.device);
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
  out.include_prompt = loaded.sentence_transformers.include_prompt;

  out.dim = loaded.config.hidden_size;
  out.vocab_size = loaded.config.vocab_size;
  out.prompts = loaded.sentence_transformers.prompts;
  out.default_prompt_name = loaded.sentence_transformers.default_prompt_name.value_or("");
  out.pooling = std::string(model::pooling_name(pooling));
  out.attention = std::string(model::attention_mode_name(loaded.encoder->attention()));
  out.max_seq_length = sentence_transformers_max_length(model_dir, out.tokenizer.get(), out.max_seq_length_source);
  std::int64_t pad = 0;
  if (out.tokenizer && out.tokenizer->pad_id()) pad = *out.tokenizer->pad_id();
  if (pad < 0 || pad >= out.vocab_size) pad = 0;  // padded ids are masked; any valid id will do
  out.embedder = std::make_unique<EncoderEmbedder>(std::move(loaded), pooling, pad);
  return out;
}

std::int64_t prompt_pool_skip(const LoadedEmbedder& embedder, const text::Tokenizer& tokenizer,
                              const std::string& prompt) {
  if (embedder.include_prompt || prompt.empty()) return 0;
  return prompt_token_count(tokenizer, prompt);
}

std::int64_t prompt_token_count(const text::Tokenizer& tokenizer, const std::string& prompt) {
  // sentence-transformers 6 (Transformer._get_prompt_length): the prompt alone,
  // tokenised with the special tokens the tokenizer adds (a leading BOS counts),
  // less a trailing special token (an EOS the post-processor appends).
  text::EncodeOptions options;
  options.add_special_tokens = true;
  const auto ids = tokenizer.encode(prompt, options).ids;
  auto count = static_cast<std::int64_t>(ids.size());
  if (count > 0 && tokenizer.is_special_id(ids.back())) --count;
  return count;
}

}  // namespace kalm::encode
