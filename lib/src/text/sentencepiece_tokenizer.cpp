// SentencePiece .model files behind the Tokenizer interface, and training.
// sentencepiece itself is reached through libkalm_spm (spm_library.h says why).
#include <memory>
#include <mutex>
#include <unordered_map>

#include "kalm/error.h"
#include "kalm/io/atomic_file.h"
#include "kalm/text/tokenizer.h"
#include "kalm/text/unicode.h"
#include "spm_library.h"
#include "tokenizer_config.h"

namespace kalm::text {

namespace {

// Frees a shim processor through the shim.
struct ProcessorDeleter {
  const detail::SpmLibrary* lib = nullptr;
  void operator()(void* p) const {
    if (p && lib) lib->free(p);
  }
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& model_path, const detail::TokenizerConfig& config)
      : lib_(detail::spm_library()) {
    source_ = model_path;
    const std::string bytes = detail::read_model_file(model_path);
    char err[512] = "";
    void* handle = lib_.load(bytes.data(), bytes.size(), err, sizeof err);
    if (!handle) throw ModelError(model_path + ": not a SentencePiece model: " + err);
    sp_.reset(handle);
    sp_.get_deleter().lib = &lib_;
    piece_size_ = lib_.piece_size(sp_.get());
    const auto own = [&](int id) -> std::optional<int32_t> {
      return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
    };
    int special[4];
    lib_.special_ids(sp_.get(), special);
    bos_id_ = own(special[0]);
    eos_id_ = own(special[1]);
    pad_id_ = own(special[2]);
    unk_id_ = own(special[3]);
    const auto resolve = [&](const std::optional<std::string>& token, std::optional<int32_t>& slot,
                             const char* field) {
      if (!token) return;
      auto id = token_to_id(*token);
      if (!id) throw ModelError(config.source + ": " + field + " \"" + *token + "\" is not a piece of " + model_path);
      slot = id;
    };
    resolve(config.bos_token, bos_id_, "bos_token");
    resolve(config.eos_token, eos_id_, "eos_token");
    resolve(config.pad_token, pad_id_, "pad_token");
    resolve(config.unk_token, unk_id_, "unk_token");
    model_max_length_ = config.model_max_length;
    add_bos_ = config.add_bos_token.value_or(false);
    add_eos_ = config.add_eos_token.value_or(false);
    if (add_bos_ && !bos_id_) throw ModelError(config.source + ": add_bos_token is set but the model has no bos");
    if (add_eos_ && !eos_id_) throw ModelError(config.source + ": add_eos_token is set but the model has no eos");
  }

  Encoding encode(std::string_view text, const EncodeOptions& options) const override {
    check_utf8(text, "text");
    const std::size_t n_special = options.add_special_tokens ? num_special_tokens_added() : 0;
    if (options.max_length && *options.max_length < n_special) {
      throw UsageError("max_length " + std::to_string(*options.max_length) + " cannot hold the " +
                       std::to_string(n_special) + " special tokens of " + source_);
    }
    int* raw = nullptr;
    std::size_t n = 0;
    char err[512] = "";
    if (lib_.encode(sp_.get(), text.data(), text.size(), &raw, &n, err, sizeof err) != 0)
      throw FormatError(std::string("sentencepiece could not encode a text: ") + err);
    std::vector<int> ids(raw, raw + n);
    lib_.free_buffer(raw);
    Encoding enc;
    enc.ids.reserve(ids.size() + 2);
    if (options.add_special_tokens && add_bos_) enc.ids.push_back(*bos_id_);
    std::size_t keep = ids.size();
    if (options.max_length && keep > *options.max_length - n_special) {
      keep = *options.max_length - n_special;
      enc.truncated = true;
    }
    enc.ids.insert(enc.ids.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(keep));
    if (options.add_special_tokens && add_eos_) enc.ids.push_back(*eos_id_);
    return enc;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::vector<int> keep;
    keep.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || id >= piece_size_) {
        throw FormatError("cannot decode token id " + std::to_string(id) + ": not in the vocabulary of " +
                          source_);
      }
      if (skip_special && lib_.is_control(sp_.get(), id)) continue;
      keep.push_back(id);
    }
    char* raw = nullptr;
    std::size_t n = 0;
    char err[512] = "";
    if (lib_.decode(sp_.get(), keep.data(), keep.size(), &raw, &n, err, sizeof err) != 0)
      throw FormatError(std::string("sentencepiece could not decode: ") + err);
    std::string text(raw, n);
    lib_.free_buffer(raw);
    return text;
  }

  std::size_t vocab_size() const override { return static_cast<std::size_t>(piece_size_); }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int id = lib_.piece_to_id(sp_.get(), token.data(), token.size());
    // PieceToId answers unk_id for unknown pieces.
    if (id < 0 || id_to_token(id) != std::optional<std::string>(std::string(token))) return std::nullopt;
    return id;
  }

  std::optional<std::string> id_to_token(int32_t id) const override {
    if (id < 0 || id >= piece_size_) return std::nullopt;
    char* raw = nullptr;
    std::size_t n = 0;
    if (lib_.id_to_piece(sp_.get(), id, &raw, &n) != 0) return std::nullopt;
    std::string piece(raw, n);
    lib_.free_buffer(raw);
    return piece;
  }

  std::size_t num_special_tokens_added() const override {
    return (add_bos_ ? 1 : 0) + (add_eos_ ? 1 : 0);
  }

 private:
  const detail::SpmLibrary& lib_;
  std::unique_ptr<void, ProcessorDeleter> sp_;
  int piece_size_ = 0;
  bool add_bos_ = false;
  bool add_eos_ = false;
};

std::mutex& trainer_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path,
                                              const std::string& tokenizer_config_path) {
  detail::TokenizerConfig config;
  if (!tokenizer_config_path.empty()) {
    config = detail::parse_tokenizer_config(detail::read_model_file(tokenizer_config_path),
                                            tokenizer_config_path);
  }
  return std::make_unique<SentencePieceTokenizer>(model_path, config);
}

void train_sentencepiece(const std::vector<std::string>& texts, const SentencePieceTrainOptions& o,
                         const std::string& out_model_path) {
  if (texts.empty()) throw UsageError("train_sentencepiece: no training texts");
  if (o.model_type != "unigram" && o.model_type != "bpe")
    throw UsageError("train_sentencepiece: model_type must be unigram or bpe, got \"" + o.model_type + "\"");
  if (o.vocab_size < 8) throw UsageError("train_sentencepiece: vocab_size must be at least 8");
  if (!(o.character_coverage > 0.0 && o.character_coverage <= 1.0))
    throw UsageError("train_sentencepiece: character_coverage must be in (0, 1]");
  if (o.num_threads < 1) throw UsageError("train_sentencepiece: num_threads must be at least 1");
  for (std::size_t i = 0; i < texts.size(); ++i) check_utf8(texts[i], "training text #" + std::to_string(i + 1));

  std::unordered_map<std::string, std::string> args = {
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"character_coverage", std::to_string(o.character_coverage)},
      {"byte_fallback", o.byte_fallback ? "true" : "false"},
      {"split_digits", o.split_digits ? "true" : "false"},
      {"max_sentence_length", std::to_string(o.max_sentence_length)},
      {"num_threads", std::to_string(o.num_threads)},
      // Every text, in the given order: no sampling, so the seed is the only randomness.
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"minloglevel", "2"},
  };
  if (!o.user_defined_symbols.empty()) {
    std::string joined;
    for (const std::string& s : o.user_defined_symbols) {
      if (s.find(',') != std::string::npos)
        throw UsageError("train_sentencepiece: user-defined symbol \"" + s + "\" contains a comma");
      if (!joined.empty()) joined += ',';
      joined += s;
    }
    args["user_defined_symbols"] = joined;
  }
  std::string model;
  {
    const auto& lib = detail::spm_library();
    std::vector<const char*> text_ptrs, keys, values;
    std::vector<std::size_t> text_lens;
    for (const auto& t : texts) {
      text_ptrs.push_back(t.data());
      text_lens.push_back(t.size());
    }
    for (const auto& [k, v] : args) {
      keys.push_back(k.c_str());
      values.push_back(v.c_str());
    }
    // The seed is process-global in sentencepiece: one training at a time.
    std::lock_guard<std::mutex> lock(trainer_mutex());
    char* raw = nullptr;
    std::size_t n = 0;
    char err[1024] = "";
    if (lib.train(text_ptrs.data(), text_lens.data(), text_ptrs.size(), keys.data(), values.data(), keys.size(),
                  o.seed, &raw, &n, err, sizeof err) != 0)
      throw FormatError(std::string("sentencepiece training failed: ") + err);
    model.assign(raw, n);
    lib.free_buffer(raw);
  }
  io::AtomicOutputFile out(out_model_path);
  out.write(model.data(), model.size());
  out.commit();
}

}  // namespace kalm::text
