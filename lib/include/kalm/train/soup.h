#pragma once
// Model soup (KaLM V2, recipe §4.2; LM-Cocktail's mechanics): the weighted
// average θ = Σ_i w_i θ_i of N checkpoints of the same architecture.
//
// Every input must be a model directory load_model reads; their configs must
// agree (config_to_json equal) and every tensor must have the same shape.
// Weights default to uniform (1/N); given weights must be finite, >= 0, one per
// input, with a positive sum, and are normalised to sum to 1. Averaging runs in
// float64 and is stored in float32. The output gets the first input's
// tokenizer and sentence-transformers files.
//
// Throws UsageError (bad weights, fewer than one input), ModelError (configs
// or shapes differ, naming the input and tensor), plus load_model's errors.
// Thread safety: reentrant.

#include <string>
#include <vector>

namespace kalm::train {

struct SoupOptions {
  std::vector<std::string> inputs;  // model or checkpoint directories
  std::vector<double> weights;      // empty = uniform
  std::string output;               // directory to write
};

void make_soup(const SoupOptions& options);

}  // namespace kalm::train
