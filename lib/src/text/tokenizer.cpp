// The Tokenizer base: batch encoding and the model-directory factory.
#include "kalm/text/tokenizer.h"

#include <omp.h>

#include <exception>
#include <sys/stat.h>

#include "kalm/error.h"

namespace kalm::text {

Tokenizer::~Tokenizer() = default;

namespace {

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Rethrows the current exception with `prefix` in front of its message, keeping
// the kalm error type (and so the tool's exit code).
[[noreturn]] void rethrow_with_prefix(std::exception_ptr error, const std::string& prefix) {
  try {
    std::rethrow_exception(error);
  } catch (const UsageError& e) {
    throw UsageError(prefix + e.what());
  } catch (const FormatError& e) {
    throw FormatError(prefix + e.what());
  } catch (const ModelError& e) {
    throw ModelError(prefix + e.what());
  } catch (const IoError& e) {
    throw IoError(prefix + e.what());
  } catch (...) {
    throw;
  }
}

// SplitMix64's output function: a bijection of 64-bit words that mixes every
// input bit into every output bit.
std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

std::uint64_t dropout_seed_for(std::uint64_t seed, std::uint64_t index) {
  return mix64(mix64(seed + 0x9E3779B97F4A7C15ull) ^ mix64(index + 0x632BE59BD9B4E019ull));
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                              const EncodeOptions& options) const {
  return encode_batch(texts, [&options](std::size_t) { return options; });
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                              const std::function<EncodeOptions(std::size_t)>& options_for) const {
  std::vector<Encoding> out(texts.size());
  const auto n = static_cast<int64_t>(texts.size());
  int64_t first_error = n;
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < n; ++i) {
    try {
      const auto k = static_cast<std::size_t>(i);
      out[k] = encode(texts[k], options_for(k));
    } catch (...) {
#pragma omp critical(kalm_text_encode_batch_error)
      {
        if (i < first_error) {
          first_error = i;
          error = std::current_exception();
        }
      }
    }
  }
  if (error) rethrow_with_prefix(error, "text #" + std::to_string(first_error + 1) + ": ");
  return out;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  const std::string dir = model_dir.empty() ? std::string(".") : model_dir;
  const std::string sep = dir.back() == '/' ? "" : "/";
  const std::string json = dir + sep + "tokenizer.json";
  const std::string config = dir + sep + "tokenizer_config.json";
  const std::string spm = dir + sep + "tokenizer.model";
  const std::string config_or_empty = is_file(config) ? config : std::string();
  if (is_file(json)) return load_hf_tokenizer_json(json, config_or_empty);
  if (is_file(spm)) return load_sentencepiece(spm, config_or_empty);
  throw ModelError(dir + ": no tokenizer.json or tokenizer.model in this directory");
}

}  // namespace kalm::text
