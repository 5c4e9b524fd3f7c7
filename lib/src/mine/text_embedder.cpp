#include "kalm/mine/text_embedder.h"

#include <algorithm>

#include "kalm/encode/engine.h"
#include "kalm/encode/model_embedder.h"
#include "kalm/error.h"
#include "kalm/io/safetensors.h"
#include "kalm/model/device.h"

namespace kalm::mine {

// The model's device (the rank's own GPU under torchrun), where the embeddings are.
torch::Device search_device_of(const ModelFlags& flags) { return encode::device_for_this_process(flags.device); }

search::SearchPrecision search_precision_of(const ModelFlags& flags) {
  return search::resolve_search_precision(flags.search_precision, search_device_of(flags));
}

TextEmbedder::TextEmbedder(const ModelFlags& flags) : flags_(flags) {
  if (flags.max_length && *flags.max_length <= 0) throw UsageError("--max-length must be positive");
  encode::EmbedderSettings settings{flags.dtype, flags.device, flags.pooling, flags.attention};
  loaded_ = encode::load_embedder(flags.model, settings, /*require_tokenizer=*/true);
  if (!loaded_.tokenizer) throw ModelError(flags.model + ": has no tokenizer (tokenizer.json or tokenizer.model)");
  max_length_ = encode::resolve_max_length(flags.max_length, loaded_.max_seq_length);
}

TextEmbedder::~TextEmbedder() = default;

torch::Tensor TextEmbedder::embed(const std::vector<std::string>& texts, const std::vector<std::string>& prefixes,
                                  const std::vector<std::string>& where) {
  KALM_ASSERT(prefixes.empty() || prefixes.size() == texts.size(), "one prefix per text");
  KALM_ASSERT(where.size() == texts.size(), "one position per text");
  if (texts.empty()) return torch::zeros({0, loaded_.dim}, torch::kFloat32);
  // Tokenise in chunks so the prefixed copies never all exist at once.
  constexpr std::size_t kChunk = 8192;
  text::EncodeOptions enc;
  enc.max_length = static_cast<std::size_t>(max_length_);
  encode::EngineOptions engine_options;
  engine_options.batch_tokens = flags_.batch_tokens;
  encode::Engine engine(*loaded_.embedder, engine_options);
  std::vector<torch::Tensor> parts;
  for (std::size_t begin = 0; begin < texts.size(); begin += kChunk) {
    const std::size_t end = std::min(texts.size(), begin + kChunk);
    std::vector<std::string> batch;
    batch.reserve(end - begin);
    for (std::size_t i = begin; i < end; ++i) batch.push_back((prefixes.empty() ? std::string() : prefixes[i]) + texts[i]);
    std::vector<text::Encoding> encodings;
    try {
      encodings = loaded_.tokenizer->encode_batch(batch, enc);
    } catch (const FormatError& e) {
      throw FormatError("in the texts from " + where[begin] + " on: " + e.what());
    }
    std::vector<std::vector<std::int32_t>> sequences;
    sequences.reserve(encodings.size());
    std::vector<std::int64_t> pool_from;  // the prefix's tokens, where the pooling leaves them out
    for (std::size_t j = 0; j < encodings.size(); ++j) {
      if (encodings[j].ids.empty()) throw FormatError(where[begin + j] + ": text has no tokens (empty text)");
      sequences.push_back(std::move(encodings[j].ids));
      if (!loaded_.include_prompt && !prefixes.empty()) {
        auto [it, fresh] = prompt_skip_.try_emplace(prefixes[begin + j], 0);
        if (fresh) it->second = encode::prompt_pool_skip(loaded_, *loaded_.tokenizer, prefixes[begin + j]);
        pool_from.push_back(it->second);
      }
    }
    if (!pool_from.empty() && std::all_of(pool_from.begin(), pool_from.end(), [](std::int64_t n) { return n == 0; }))
      pool_from.clear();
    torch::Tensor pooled;
    try {
      pooled = engine.embed(sequences, {}, pool_from);
    } catch (const UsageError& e) {  // an all-prompt sequence: bad data, named by where it starts
      throw FormatError("in the texts from " + where[begin] + " on: " + e.what());
    } catch (const encode::NonFiniteEmbedding& e) {
      throw ModelError(where[begin + e.index] + ": the embedding model computes a NaN or infinite embedding for "
                       "this text");
    }
    parts.push_back(encode::finalize_embeddings(pooled, 0, /*normalize=*/true));
  }
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 0);
}

std::vector<std::int64_t> TextEmbedder::count_tokens(const std::vector<std::string>& texts) {
  text::EncodeOptions enc;  // no truncation: the length bounds want the true count
  auto encodings = loaded_.tokenizer->encode_batch(texts, enc);
  std::vector<std::int64_t> counts;
  counts.reserve(encodings.size());
  for (const auto& e : encodings) counts.push_back(static_cast<std::int64_t>(e.ids.size()));
  return counts;
}

}  // namespace kalm::mine
