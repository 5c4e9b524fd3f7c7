#pragma once
// Teacher soft labels computed on the fly (kalm-distill --teacher DIR): a frozen
// model embeds each training batch's queries and passages, and the cosine of
// every query with its own group's passages becomes loss::BatchInfo::
// teacher_scores, in the layout that the records' pos_scores / neg_scores give
// (row i: the sampled positive, then the M sampled negatives).
//
// The teacher embeds as kalm-mine-negatives --scores does with the same model:
// the directory's own tokenizer, pooling and attention, float32 on the given
// device (the student's; kalm-mine-negatives --device), no graph, outside the student's bf16 autocast, through the encoding engine
// (length-sorted, token-budget batches) and L2-normalised. Queries arrive with
// their instruction already applied (the student's query text), with the
// instruction's prefix beside them: a teacher that pools with
// include_prompt=false leaves that prefix's tokens out (counted as
// kalm-mine-negatives and sentence-transformers count a prompt); queries and
// passages are truncated to the student's query / passage max lengths.
//
// Determinism: the scores are a pure function of the batch's texts (the
// teacher never changes), so a resumed run recomputes the same values.
//
// Thread safety: one Teacher per thread (the encoding engine is per thread;
// LibTorch's intra-op pool works inside each batch).

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kalm/encode/model_embedder.h"

namespace kalm::train {

class Teacher {
 public:
  // Opens the model directory (a tokenizer is required). Throws ModelError /
  // FormatError / IoError naming the directory's file, UsageError for a max
  // length < 1 or a bad device. `device`: cpu, cuda or cuda:N.
  Teacher(const std::string& model_dir, std::int64_t query_max_length, std::int64_t passage_max_length,
          const std::string& device = "cpu");
  ~Teacher();
  Teacher(const Teacher&) = delete;
  Teacher& operator=(const Teacher&) = delete;

  // queries: B texts; passages: B·G texts, group-major; sources (optional, one
  // per text) name each text in errors; query_prompts (empty, or one per
  // query: the prefix of its text that is its instruction, "" for none) are
  // left out of the pooling when the teacher pools with include_prompt=false.
  // Returns [B, G] float64 on the CPU:
  // scores[i][g] = cos(query i, passage i·G + g), computed in float64 from the
  // float32 embeddings. Throws UsageError when group_size < 1 or the passage
  // count is not B·G, FormatError naming the source when a text has no token
  // under the teacher's tokenizer, or when a query's tokens are all prompt.
  torch::Tensor scores(const std::vector<std::string>& queries, const std::vector<std::string>& passages,
                       std::int64_t group_size, const std::vector<std::string>& query_sources = {},
                       const std::vector<std::string>& passage_sources = {},
                       const std::vector<std::string>& query_prompts = {});

  const std::string& model_dir() const { return model_dir_; }

 private:
  // [N, D] float32, rows unit-norm; prompts as scores' query_prompts.
  torch::Tensor embed(const std::vector<std::string>& texts, std::int64_t max_length,
                      const std::vector<std::string>& sources, const std::vector<std::string>& prompts = {});

  std::string model_dir_;
  std::int64_t query_max_length_;
  std::int64_t passage_max_length_;
  encode::LoadedEmbedder loaded_;
  std::map<std::string, std::int64_t> prompt_skip_;  // prompt -> tokens left out of the pooling
};

}  // namespace kalm::train
