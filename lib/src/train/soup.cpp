#include "kalm/train/soup.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "kalm/error.h"
#include "kalm/io/output_dir.h"
#include "kalm/model/checkpoint.h"
#include "kalm/train/export.h"

namespace kalm::train {
namespace fs = std::filesystem;

void make_soup(const SoupOptions& o) {
  if (o.inputs.empty()) throw UsageError("soup: give at least one checkpoint directory");
  if (o.output.empty()) throw UsageError("soup: --output DIR is required");
  std::vector<double> w = o.weights;
  if (w.empty()) w.assign(o.inputs.size(), 1.0);
  if (w.size() != o.inputs.size())
    throw UsageError("soup: " + std::to_string(w.size()) + " weights for " + std::to_string(o.inputs.size()) +
                     " checkpoints");
  double sum = 0;
  for (double v : w) {
    if (!std::isfinite(v) || v < 0) throw UsageError("soup: weights must be finite and >= 0");
    sum += v;
  }
  if (!(sum > 0)) throw UsageError("soup: the weights sum to zero");

  model::LoadedModel first = model::load_model(o.inputs[0]);
  const std::string first_config = model::config_to_json(first.config, first.encoder->attention());
  std::map<std::string, torch::Tensor> acc;
  for (const auto& [name, t] : first.encoder->hf_tensors()) acc[name] = t.to(torch::kDouble) * (w[0] / sum);
  for (std::size_t i = 1; i < o.inputs.size(); ++i) {
    auto m = model::load_model(o.inputs[i]);
    if (model::config_to_json(m.config, m.encoder->attention()) != first_config)
      throw ModelError("soup: " + o.inputs[i] + "/config.json differs from " + o.inputs[0] +
                       "/config.json: only checkpoints of one architecture can be averaged");
    // The soup takes the first input's pooling files: a checkpoint that pools
    // otherwise was trained for other embeddings.
    const auto& st0 = first.sentence_transformers;
    const auto& st = m.sentence_transformers;
    if (st.include_prompt != st0.include_prompt)
      throw ModelError("soup: " + o.inputs[i] + " pools with include_prompt " + (st.include_prompt ? "true" : "false") +
                       " and " + o.inputs[0] + " with " + (st0.include_prompt ? "true" : "false") +
                       " (1_Pooling/config.json): only checkpoints that embed queries the same way can be averaged");
    if (st.pooling != st0.pooling)
      throw ModelError("soup: " + o.inputs[i] + " and " + o.inputs[0] +
                       " pool differently (1_Pooling/config.json): only checkpoints with one pooling can be averaged");
    for (const auto& [name, t] : m.encoder->hf_tensors()) {
      auto it = acc.find(name);
      if (it == acc.end() || it->second.sizes() != t.sizes())
        throw ModelError("soup: " + o.inputs[i] + ": tensor '" + name + "' has no counterpart of the same shape in " +
                         o.inputs[0]);
      it->second.add_(t.to(torch::kDouble), w[i] / sum);
    }
  }
  first.encoder->load_hf_tensors(acc, o.inputs[0]);

  // Claimed for the run, staged, then published with config.json last: a
  // failed soup leaves no directory that looks like a model.
  const io::OutputLock lock = io::OutputLock::directory(o.output, "kalm-train soup");
  io::remove_staging_leftovers(o.output);
  io::StagingDirectory staging((fs::path(o.output) / ".soup.kalm-tmp").string());
  const fs::path tmp = staging.path();
  model::save_model(tmp.string(), *first.encoder);
  if (fs::exists(fs::path(o.inputs[0]) / "tokenizer.json") || fs::exists(fs::path(o.inputs[0]) / "tokenizer.model"))
    copy_tokenizer_files(o.inputs[0], tmp.string());
  std::error_code ec;
  for (const char* name : {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                           "1_Pooling/config.json"}) {
    const fs::path src = fs::path(o.inputs[0]) / name;
    if (!fs::exists(src)) continue;
    fs::create_directories((tmp / name).parent_path());
    fs::copy_file(src, tmp / name, fs::copy_options::overwrite_existing, ec);
    if (ec) throw IoError(src.string() + ": cannot copy: " + ec.message());
  }
  io::publish_staged(tmp.string(), o.output, {"config.json"}, {"model"});
  staging.published();
}

}  // namespace kalm::train
