#include "subword_model.h"

#include "bpe_model.h"
#include "kalm/error.h"
#include "unigram_model.h"

namespace kalm::text::detail {

void SubwordModel::tokenize_with_dropout(std::string_view, std::vector<int32_t>&, double, DropoutRng&) const {
  throw UsageError("BPE dropout needs a BPE tokenizer; this one's model has no merges to skip");
}

std::unique_ptr<SubwordModel> make_subword_model(JsonElement model, const std::string& ctx) {
  const auto type = json_opt_string(model, "type", ctx);
  if (type && *type == "Unigram") return std::make_unique<UnigramModel>(model, ctx);
  if (!type || *type == "BPE") return std::make_unique<BpeModel>(model, ctx);
  json_fail(ctx + ".type", "unsupported model type \"" + std::string(*type) +
                               "\" (kalm reads BPE and Unigram tokenizer.json models and SentencePiece .model files)");
}

}  // namespace kalm::text::detail
