// SentencePiece .model files behind the Tokenizer interface, and training.
// sentencepiece itself is reached through libkalm_spm (spm_library.h says why).
#include <algorithm>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/atomic_file.h"
#include "kalm/text/tokenizer.h"
#include "kalm/text/unicode.h"
#include "spm_library.h"
#include "spm_proto.h"
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

using Processor = std::unique_ptr<void, ProcessorDeleter>;

// A token that transformers' fast tokenizer cuts out of the raw text before
// anything else sees it (an AddedToken with normalized=False).
struct AddedToken {
  std::string content;
  int32_t id = 0;
};

// How transformers applies a bare tokenizer.model under tokenizer_class
// LlamaTokenizer: AutoTokenizer (and so sentence-transformers) builds
// LlamaTokenizerFast with convert_slow_tokenizer.LlamaConverter, which
//  * keeps the Unigram/BPE pieces and scores, but ignores the model's
//    normalizer_spec (no NFKC, no whitespace folding or stripping);
//  * cuts CONTROL and USER_DEFINED pieces and the special tokens out of the
//    text first (leftmost, longest), then treats each remaining segment alone;
//  * legacy (the default): prepends U+2581 to every non-empty segment and turns
//    spaces into U+2581; non-legacy: Metaspace with prepend_scheme "first", i.e.
//    only the segment at the start of the text, and only when it does not
//    already start with a space.
// add_prefix_space false drops the prefix in both. The slow LlamaTokenizer
// differs (it lets sentencepiece normalise), but it is not what users get.
// tests/fixtures/export/expected_spm_ids.jsonl holds the oracle's ids.
struct LlamaFastRules {
  bool legacy = true;
  bool add_prefix_space = true;
  std::vector<AddedToken> added;                 // longest first
  std::vector<std::vector<std::size_t>> by_byte;  // first byte -> indices into added
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& model_path, const detail::TokenizerConfig& config)
      : lib_(detail::spm_library()) {
    source_ = model_path;
    const std::string bytes = detail::read_model_file(model_path);
    sp_ = load_processor(bytes, model_path);
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
    if (config.converts_spm_like_llama()) set_up_llama_rules(bytes, config);
  }

  Encoding encode(std::string_view text, const EncodeOptions& options) const override {
    check_utf8(text, "text");
    if (options.bpe_dropout != 0)
      throw UsageError("BPE dropout needs a BPE tokenizer; " + source_ + " is a SentencePiece model");
    const std::size_t n_special = options.add_special_tokens ? num_special_tokens_added() : 0;
    if (options.max_length && *options.max_length < n_special) {
      throw UsageError("max_length " + std::to_string(*options.max_length) + " cannot hold the " +
                       std::to_string(n_special) + " special tokens of " + source_);
    }
    std::vector<int> ids;
    if (llama_) {
      encode_like_llama_fast(text, ids);
    } else {
      encode_piece(sp_.get(), text, ids);
    }
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
  Processor load_processor(const std::string& bytes, const std::string& model_path) const {
    char err[512] = "";
    void* handle = lib_.load(bytes.data(), bytes.size(), err, sizeof err);
    if (!handle) throw ModelError(model_path + ": not a SentencePiece model: " + err);
    Processor p(handle);
    p.get_deleter().lib = &lib_;
    return p;
  }

  // Appends sentencepiece's ids for `text` under processor `p`.
  void encode_piece(const void* p, std::string_view text, std::vector<int>& ids) const {
    int* raw = nullptr;
    std::size_t n = 0;
    char err[512] = "";
    if (lib_.encode(p, text.data(), text.size(), &raw, &n, err, sizeof err) != 0)
      throw FormatError(std::string("sentencepiece could not encode a text: ") + err);
    ids.insert(ids.end(), raw, raw + n);
    lib_.free_buffer(raw);
  }

  void set_up_llama_rules(const std::string& bytes, const detail::TokenizerConfig& config) {
    auto rules = std::make_unique<LlamaFastRules>();
    rules->legacy = config.legacy.value_or(true);
    rules->add_prefix_space = config.add_prefix_space.value_or(true);
    const std::vector<detail::SpmPiece> pieces = detail::spm_pieces(bytes, source_);
    if (pieces.size() != static_cast<std::size_t>(piece_size_))
      throw ModelError(source_ + ": " + std::to_string(pieces.size()) + " pieces in the file, but sentencepiece " +
                       "loaded " + std::to_string(piece_size_));
    const auto add = [&](const std::string& content, int32_t id) {
      if (content.empty()) return;
      for (const AddedToken& a : rules->added)
        if (a.content == content) return;
      rules->added.push_back({content, id});
    };
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      if (pieces[i].type == detail::SpmPieceType::kControl || pieces[i].type == detail::SpmPieceType::kUserDefined)
        add(pieces[i].piece, static_cast<int32_t>(i));
    }
    // The special tokens, LlamaTokenizer's defaults where the config names none.
    for (const auto& [token, fallback] : {std::pair{config.unk_token, "<unk>"}, std::pair{config.bos_token, "<s>"},
                                          std::pair{config.eos_token, "</s>"}, std::pair{config.pad_token, ""}}) {
      const std::string content = token ? *token : std::string(fallback);
      if (auto id = token_to_id(content)) add(content, *id);
    }
    std::stable_sort(rules->added.begin(), rules->added.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    rules->by_byte.resize(256);
    for (std::size_t k = 0; k < rules->added.size(); ++k)
      rules->by_byte[static_cast<unsigned char>(rules->added[k].content[0])].push_back(k);
    identity_sp_ = load_processor(detail::spm_with_identity_normalizer(bytes, source_), source_);
    llama_ = std::move(rules);
  }

  void encode_like_llama_fast(std::string_view text, std::vector<int>& ids) const {
    const LlamaFastRules& r = *llama_;
    std::string buffer;
    const auto segment = [&](std::size_t begin, std::size_t end) {
      if (begin == end) return;
      const std::string_view seg = text.substr(begin, end - begin);
      bool prefix = r.add_prefix_space;
      if (!r.legacy) {
        static constexpr std::string_view kMetaspace = "\xE2\x96\x81";
        prefix = prefix && begin == 0 && seg.front() != ' ' && seg.substr(0, kMetaspace.size()) != kMetaspace;
      }
      buffer.assign(prefix ? " " : "");
      buffer.append(seg);
      encode_piece(identity_sp_.get(), buffer, ids);
    };
    std::size_t start = 0, i = 0;
    while (i < text.size()) {
      const AddedToken* match = nullptr;
      // Valid UTF-8 and tokens that start with a lead byte: no match inside a character.
      for (std::size_t k : r.by_byte[static_cast<unsigned char>(text[i])]) {
        if (text.compare(i, r.added[k].content.size(), r.added[k].content) == 0) {
          match = &r.added[k];
          break;  // longest first
        }
      }
      if (!match) {
        ++i;
        continue;
      }
      segment(start, i);
      ids.push_back(match->id);
      i += match->content.size();
      start = i;
    }
    segment(start, text.size());
  }

  const detail::SpmLibrary& lib_;
  Processor sp_;
  // Set for LlamaTokenizer configs: encode as transformers' fast tokenizer does,
  // through a copy of the model with sentencepiece's identity normaliser.
  std::unique_ptr<const LlamaFastRules> llama_;
  Processor identity_sp_;
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
      {"normalization_rule_name", o.normalization_rule_name},
      {"remove_extra_whitespaces", o.remove_extra_whitespaces ? "true" : "false"},
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
