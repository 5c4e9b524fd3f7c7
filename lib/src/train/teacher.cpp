#include "kalm/train/teacher.h"

#include "kalm/encode/engine.h"
#include "kalm/error.h"

namespace kalm::train {

Teacher::Teacher(const std::string& model_dir, std::int64_t query_max_length, std::int64_t passage_max_length,
                 const std::string& device)
    : model_dir_(model_dir), query_max_length_(query_max_length), passage_max_length_(passage_max_length) {
  if (query_max_length < 1 || passage_max_length < 1)
    throw UsageError("--teacher: the query and passage max lengths must be at least 1 token");
  // Float32 with the directory's own pooling and attention: what
  // kalm-mine-negatives --scores uses by default, so scores written by it and
  // scores computed here agree.
  encode::EmbedderSettings settings;
  settings.device = device;
  try {
    loaded_ = encode::load_embedder(model_dir, settings, /*require_tokenizer=*/true);
  } catch (const ModelError& e) {
    throw ModelError(std::string("--teacher: ") + e.what());
  }
  if (!loaded_.tokenizer) throw ModelError("--teacher " + model_dir + ": has no tokenizer (tokenizer.json or tokenizer.model)");
}

Teacher::~Teacher() = default;

torch::Tensor Teacher::embed(const std::vector<std::string>& texts, std::int64_t max_length,
                             const std::vector<std::string>& sources, const std::vector<std::string>& prompts) {
  text::EncodeOptions eo;
  eo.add_special_tokens = true;
  eo.max_length = static_cast<std::size_t>(max_length);
  auto encodings = loaded_.tokenizer->encode_batch(texts, eo);
  std::vector<std::vector<std::int32_t>> sequences;
  sequences.reserve(encodings.size());
  // Leading tokens each text leaves out of the pooling: its prompt's, when the
  // teacher pools with include_prompt=false (the same count for the same prompt).
  std::vector<std::int64_t> pool_from;
  if (!loaded_.include_prompt && !prompts.empty()) {
    if (prompts.size() != texts.size())
      throw InternalError("teacher: " + std::to_string(prompts.size()) + " prompts for " + std::to_string(texts.size()) +
                          " texts");
    pool_from.reserve(prompts.size());
    for (const auto& prompt : prompts) {
      auto [it, fresh] = prompt_skip_.try_emplace(prompt, 0);
      if (fresh) it->second = encode::prompt_pool_skip(loaded_, *loaded_.tokenizer, prompt);
      pool_from.push_back(it->second);
    }
  }
  for (std::size_t i = 0; i < encodings.size(); ++i) {
    const auto name = [&] { return i < sources.size() ? sources[i] : "text " + std::to_string(i); };
    if (encodings[i].ids.empty())
      throw FormatError(name() + ": a text has no token under the teacher's tokenizer (" + model_dir_ + ")");
    if (!pool_from.empty() && pool_from[i] >= static_cast<std::int64_t>(encodings[i].ids.size()))
      throw FormatError(name() + ": the query's " + std::to_string(encodings[i].ids.size()) + " tokens under the teacher " +
                        model_dir_ + " (--query-max-length " + std::to_string(max_length) +
                        ") are all instruction, which its pooling leaves out (include_prompt=false)");
    sequences.push_back(std::move(encodings[i].ids));
  }
  torch::NoGradGuard no_grad;
  encode::Engine engine(*loaded_.embedder, encode::EngineOptions{});
  try {
    return encode::finalize_embeddings(engine.embed(sequences, {}, pool_from), 0, /*normalize=*/true);
  } catch (const encode::NonFiniteEmbedding& e) {
    throw ModelError((e.index < sources.size() ? sources[e.index] : "text " + std::to_string(e.index)) +
                     ": the teacher " + model_dir_ + " computes a NaN or infinite embedding for this text");
  }
}

torch::Tensor Teacher::scores(const std::vector<std::string>& queries, const std::vector<std::string>& passages,
                              std::int64_t group_size, const std::vector<std::string>& query_sources,
                              const std::vector<std::string>& passage_sources,
                              const std::vector<std::string>& query_prompts) {
  const auto b = static_cast<std::int64_t>(queries.size());
  if (group_size < 1) throw UsageError("teacher scores: group size must be at least 1, got " + std::to_string(group_size));
  if (static_cast<std::int64_t>(passages.size()) != b * group_size)
    throw UsageError("teacher scores: " + std::to_string(passages.size()) + " passages for " + std::to_string(b) +
                     " queries of group size " + std::to_string(group_size) + " (want B·G)");
  if (b == 0) return torch::zeros({0, group_size}, torch::kDouble);
  const auto q = embed(queries, query_max_length_, query_sources, query_prompts).to(torch::kCPU, torch::kDouble);
  const auto p = embed(passages, passage_max_length_, passage_sources).to(torch::kCPU, torch::kDouble);
  return (q.unsqueeze(1) * p.view({b, group_size, -1})).sum(-1);
}

}  // namespace kalm::train
