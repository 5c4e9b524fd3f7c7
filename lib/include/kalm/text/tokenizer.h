#pragma once
// Tokenizers: text -> token ids -> text, with Hugging Face parity.
//
// Two back ends behind one interface:
//  * Hugging Face `tokenizer.json` (byte-level BPE as in Qwen2/2.5/3, SentencePiece-
//    style BPE with byte fallback as in Gemma3), reimplemented here so that every id
//    equals what HF `tokenizers` produces (tests/fixtures/tokenizers/ holds the
//    oracle's ids for a multilingual text set).
//  * SentencePiece `.model` files through the sentencepiece library.
//
// Thread safety: a loaded Tokenizer is immutable apart from an internal, bounded,
// sharded word cache; every const method may be called concurrently from any number
// of threads. encode_batch() itself uses OpenMP across texts.
//
// Input text must be valid UTF-8: encode() throws kalm::FormatError otherwise (HF's
// bindings only ever see valid strings, so there is no parity to keep there, and a
// silent replacement would change the data).
//
// Supported tokenizer.json components: normalizers NFC/NFD/NFKC/NFKD, Lowercase,
// Replace, Prepend, Strip, StripAccents, ByteLevel, BertNormalizer, Sequence;
// pre-tokenizers ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit, Digits,
// Punctuation, CharDelimiterSplit, BertPreTokenizer, Sequence; model BPE; decoders
// ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder, WordPiece,
// Sequence; post-processors TemplateProcessing, ByteLevel, RobertaProcessing,
// BertProcessing, Sequence. Anything else (Unigram/WordPiece models, Precompiled
// normalizer, ...) is a ModelError at load time. Split regexes are Oniguruma syntax
// (as in HF) run on PCRE2.
//
// Deliberate HF behaviours kept for parity: a character that is not in a BPE vocab
// without byte_fallback or unk_token is dropped (HF does the same; Qwen and Gemma
// cover every byte, so real models never hit it); added-token ids are assigned as
// HF's AddedVocabulary does (vocab id of the content, else the next free id).
// Deliberate differences: the file's BPE "dropout", "truncation" and "padding" are
// ignored (transformers also ignores the latter unless asked); EncodeOptions decide,
// BPE dropout included (EncodeOptions::bpe_dropout, for training only).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kalm::text {

// The ids of one text. `truncated` is true when EncodeOptions::max_length cut
// content tokens off (the special tokens added by the post-processor are kept).
struct Encoding {
  std::vector<int32_t> ids;
  bool truncated = false;
};

struct EncodeOptions {
  // Add the model's special tokens (HF `add_special_tokens`): e.g. Gemma's <bos>.
  bool add_special_tokens = true;
  // Keep at most this many ids in total, special tokens included (HF truncation,
  // direction right, stride 0). Throws UsageError when it cannot even hold the
  // special tokens. nullopt: no truncation.
  std::optional<std::size_t> max_length;
  // BPE dropout (Provilkov et al. 2020, as HF tokenizers' BPE "dropout"): each
  // merge is skipped with this probability, so that words also reach a model
  // as the smaller pieces they are made of. For training only (kalm-train
  // --bpe-dropout); 0 = the deterministic encoding every other tool uses. A
  // tokenizer whose model is not BPE refuses a non-zero value (UsageError).
  double bpe_dropout = 0;
  // Which merges are skipped is a function of this seed and the text alone.
  std::uint64_t dropout_seed = 0;
  // The pre-tokens that produce the first `dropout_after` ids (an instruction
  // prompt, whose token count the pooling relies on) are encoded without dropout.
  std::size_t dropout_after = 0;
};

// The dropout seed of text `index` of a batch whose draws come from `seed`:
// a strong 64-bit mix of both, so that the texts' generators (SplitMix64,
// whose streams from nearby seeds would overlap) draw unrelated sequences and
// a text's ids do not depend on the thread that encodes it.
std::uint64_t dropout_seed_for(std::uint64_t seed, std::uint64_t index);

class Tokenizer {
 public:
  virtual ~Tokenizer();

  // Encodes one text. Throws FormatError on invalid UTF-8 (message gives the byte
  // offset), UsageError on an impossible max_length.
  virtual Encoding encode(std::string_view text, const EncodeOptions& options) const = 0;

  // Encodes many texts on all OpenMP threads; result i belongs to texts[i].
  // The first error (in input order) is rethrown after the parallel region, with
  // the text's index in the message.
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts,
                                     const EncodeOptions& options) const;
  // The same with text i encoded under options_for(i) (e.g. its own dropout seed).
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts,
                                     const std::function<EncodeOptions(std::size_t)>& options_for) const;

  // Ids -> text. skip_special drops special tokens (HF `skip_special_tokens`).
  // Throws FormatError for an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const = 0;

  // Number of ids the model may emit: max id + 1 (added tokens included).
  virtual std::size_t vocab_size() const = 0;
  // The id of a token string (added/special tokens included); nullopt if unknown.
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  // The token string of an id; nullopt if no token has that id.
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  // Ids the post-processor adds to one text when add_special_tokens is true.
  virtual std::size_t num_special_tokens_added() const = 0;

  // Special tokens named by tokenizer_config.json (or the SentencePiece model).
  std::optional<int32_t> pad_id() const { return pad_id_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> unk_id() const { return unk_id_; }
  // One of those four (transformers' all_special_ids, less the
  // additional_special_tokens no post-processor appends).
  bool is_special_id(int32_t id) const { return id == pad_id_ || id == bos_id_ || id == eos_id_ || id == unk_id_; }
  // tokenizer_config.json `model_max_length` when present and sane.
  std::optional<std::size_t> model_max_length() const { return model_max_length_; }
  // Where it was loaded from, for messages and provenance.
  const std::string& source() const { return source_; }

 protected:
  std::optional<int32_t> pad_id_, bos_id_, eos_id_, unk_id_;
  std::optional<std::size_t> model_max_length_;
  std::string source_;
};

// Loads a model directory: tokenizer.json (+ tokenizer_config.json when present),
// else tokenizer.model. Throws ModelError naming the directory when neither file
// exists, or naming the file when it is malformed or uses an unsupported component.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

// Loads a Hugging Face tokenizer.json; tokenizer_config_path may be empty. The
// config supplies pad/bos/eos/unk tokens, model_max_length and, for the Llama and
// Gemma tokenizer classes, add_bos_token/add_eos_token (which rebuild the
// post-processor as transformers does). Throws ModelError naming the file.
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& tokenizer_json_path,
                                                  const std::string& tokenizer_config_path = "");

// The same from in-memory JSON; `source_name` is used in messages.
std::unique_ptr<Tokenizer> parse_hf_tokenizer_json(std::string_view tokenizer_json,
                                                   std::string_view tokenizer_config_json = {},
                                                   const std::string& source_name = "tokenizer.json");

// Loads a SentencePiece .model. tokenizer_config_path (may be empty) supplies the
// special tokens and add_bos_token/add_eos_token; without it no special token is
// added and the ids are spm_encode's. When the config names tokenizer_class
// LlamaTokenizer or CodeLlamaTokenizer (Fast or not), the ids are those of the
// LlamaTokenizerFast that transformers' AutoTokenizer (and sentence-transformers)
// builds from the file, honouring `legacy` and `add_prefix_space`: the model's
// normalizer_spec (e.g. nmt_nfkc, whitespace folding) is not applied, and
// control, user-defined and special tokens are cut out of the text first.
// Throws ModelError naming the file.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path,
                                              const std::string& tokenizer_config_path = "");

// The tokenizer.json that transformers 4's AutoTokenizer builds from a unigram
// SentencePiece model under tokenizer_class LlamaTokenizer (its LlamaConverter,
// legacy, with prefix space, no added bos/eos): the pieces and scores as a
// Unigram model with byte fallback; a U+2581 prepended and every space turned
// into U+2581; control, user-defined and unknown pieces as added tokens cut out
// of the text first. kalm-train writes it beside the tokenizer.model it trains,
// with tokenizer_class PreTrainedTokenizerFast: transformers 5's LlamaTokenizer
// no longer converts a tokenizer.model this way (it builds a BPE from the
// pieces), while any transformers and kalm read this file as it is, so they
// give the same ids as kalm's Llama path (load_sentencepiece) gives for the
// model. Throws ModelError naming the file when it is not a SentencePiece
// model or is not a unigram one.
std::string sentencepiece_to_tokenizer_json(const std::string& model_path);

// Training a byte-level BPE tokenizer (from-scratch experiments) in exactly the
// pipeline of transformers' Qwen2Tokenizer: NFC, Qwen2's pre-tokenizer regex,
// GPT-2's byte-to-character map, BPE without unk. transformers 5 loads any
// checkpoint whose config.json says model_type qwen2 with that pipeline,
// whatever tokenizer.json or tokenizer_class say, so only such a tokenizer is
// read the same way by kalm, transformers 4 and transformers 5 for every
// architecture kalm exports.
struct ByteLevelBpeTrainOptions {
  std::size_t vocab_size = 8000;  // the 256 bytes + merged tokens + special tokens
  std::vector<std::string> special_tokens = {"<|endoftext|>"};  // added tokens, after the merges
};

// Pre-tokenizes `texts` (all of them, in order) as the tokenizer will, then
// repeatedly merges the most frequent adjacent pair (ties: the smallest ids)
// until the vocabulary is full or no pair is left. Returns the tokenizer.json
// text. Throws UsageError when vocab_size cannot hold the bytes, the special
// tokens and one merge, or there are no texts; FormatError for invalid UTF-8.
std::string train_byte_level_bpe(const std::vector<std::string>& texts, const ByteLevelBpeTrainOptions& options);

// Options for training a SentencePiece model from texts (from-scratch experiments).
struct SentencePieceTrainOptions {
  std::size_t vocab_size = 8000;          // pieces in the model, specials included
  std::string model_type = "unigram";     // "unigram" or "bpe"
  double character_coverage = 0.9995;     // share of characters covered by pieces
  bool byte_fallback = false;             // <0xNN> pieces for uncovered bytes
  std::size_t max_sentence_length = 4192; // longer texts (bytes) are skipped by the trainer
  unsigned int seed = 42;                 // sentencepiece's random generator seed
  int num_threads = 1;                    // 1 keeps unigram EM bit-for-bit reproducible
  bool split_digits = false;              // every digit its own piece
  std::vector<std::string> user_defined_symbols;  // always kept whole
  // sentencepiece's text normalisation before training and encoding: its
  // default NFKC rule and whitespace squeezing, or "identity" with
  // remove_extra_whitespaces false as Llama's models have (what
  // transformers' LlamaTokenizerFast assumes: then sentencepiece, the slow and
  // the fast Llama tokenizers all give the same ids).
  std::string normalization_rule_name = "nmt_nfkc";  // nmt_nfkc | nfkc | identity | ...
  bool remove_extra_whitespaces = true;
};

// Trains on `texts` (all of them, in order, no sampling) and writes the .model to
// out_model_path atomically. Throws UsageError for bad options or no texts,
// FormatError when sentencepiece rejects the data, IoError on write failure.
void train_sentencepiece(const std::vector<std::string>& texts,
                         const SentencePieceTrainOptions& options,
                         const std::string& out_model_path);

}  // namespace kalm::text
