#pragma once
// The "model" stage of a Hugging Face tokenizer.json (internal to kalm::text):
// what turns one pre-token into ids. BPE (bpe_model.h) and Unigram
// (unigram_model.h) implement it; make_subword_model picks one by "type".
//
// Implementations are immutable after construction (caches aside, which lock)
// and safe to call from many threads.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hf_json.h"

namespace kalm::text::detail {

// The generator of BPE dropout's draws: SplitMix64 (Steele, Lea, Flood 2014).
// A text's dropout starts a generator from its own seed, hundreds of times a
// training step, so seeding must cost nothing: std::mt19937_64 spent more time
// seeding (its 312-word state) than a short text's merges take.
class DropoutRng {
 public:
  explicit DropoutRng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) from the top 53 bits, the same on every standard library
  // (std::uniform_real_distribution's algorithm is the library's own).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

class SubwordModel {
 public:
  virtual ~SubwordModel() = default;
  // Appends the ids of one pre-token (valid UTF-8) to `out`. Throws ModelError
  // when the text needs an unk token the model does not have.
  virtual void tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;
  // The same with BPE dropout: each merge skipped with probability p (0 < p <= 1),
  // drawing from rng. Models without merges throw UsageError.
  virtual void tokenize_with_dropout(std::string_view word, std::vector<int32_t>& out, double p,
                                     DropoutRng& rng) const;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  // nullptr when no vocab entry has this id.
  virtual const std::string_view* id_to_token(int32_t id) const = 0;
  virtual std::size_t id_limit() const = 0;  // max id + 1
};

// The tokenizer.json "model" object: BPE (the default when "type" is absent, as
// for files written before tokenizers tagged models) or Unigram. Any other type
// is a ModelError naming ctx.
std::unique_ptr<SubwordModel> make_subword_model(JsonElement model, const std::string& ctx);

}  // namespace kalm::text::detail
