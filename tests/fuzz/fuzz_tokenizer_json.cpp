// libFuzzer target: Hugging Face tokenizer.json (lib/src/text/hf_tokenizer.cpp
// and the components it builds), through parse_hf_tokenizer_json, the
// in-memory twin of load_hf_tokenizer_json that load_tokenizer uses.
//
// Input: parts separated by the bytes 00 01 (fuzz_common.h):
//   tokenizer.json [00 01 tokenizer_config.json [00 01 text]...]
// A loaded tokenizer encodes a few fixed texts and every text part, with and
// without special tokens and under a max_length, then decodes the ids.
//
// Checks beyond "no crash": every id encode() returns is below vocab_size(),
// a max_length is honoured, and decode() accepts the ids encode() made.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "kalm/text/tokenizer.h"

namespace {

using kalm::text::EncodeOptions;
using kalm::text::Tokenizer;

const char* const kTexts[] = {
    "Hello world! It's 2026, isn't it?",
    "  leading and trailing spaces\t\n",
    "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x99\x82 12345",
    "<|endoftext|><bos><unk>[CLS] x</s>",
    "",
};

void exercise(const Tokenizer& tok, std::string_view text) {
  const std::size_t vocab = tok.vocab_size();
  for (int mode = 0; mode < 3; ++mode) {
    EncodeOptions options;
    options.add_special_tokens = mode != 1;
    if (mode == 2) options.max_length = tok.num_special_tokens_added() + text.size() % 7;
    kalm::text::Encoding enc;
    if (!kalm_fuzz::expect_kalm_errors([&] { enc = tok.encode(text, options); })) return;
    for (std::int32_t id : enc.ids)
      KALM_FUZZ_CHECK(id >= 0 && static_cast<std::size_t>(id) < vocab, "id " + std::to_string(id));
    if (options.max_length) KALM_FUZZ_CHECK(enc.ids.size() <= *options.max_length, "max_length");
    for (bool skip : {true, false}) {
      try {
        (void)tok.decode(enc.ids, skip);
      } catch (const kalm::Error& e) {
        kalm_fuzz::finding(std::string("decode() refused ids that encode() made: ") + e.what());
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string_view> parts = kalm_fuzz::split_parts(data, size);
  std::string_view config = parts.size() > 1 ? parts[1] : std::string_view();
  std::unique_ptr<Tokenizer> tok;
  if (!kalm_fuzz::expect_kalm_errors([&] { tok = kalm::text::parse_hf_tokenizer_json(parts[0], config); }))
    return 0;
  for (const char* text : kTexts) exercise(*tok, text);
  for (std::size_t i = 2; i < parts.size() && i < 8; ++i) exercise(*tok, parts[i]);
  // The vocabulary's lookups, over the first ids.
  const std::size_t n = std::min<std::size_t>(tok->vocab_size(), 512);
  for (std::size_t id = 0; id < n; ++id) {
    if (auto s = tok->id_to_token(static_cast<std::int32_t>(id))) (void)tok->token_to_id(*s);
  }
  for (auto id : {tok->pad_id(), tok->bos_id(), tok->eos_id(), tok->unk_id()})
    if (id) KALM_FUZZ_CHECK(*id >= 0 && static_cast<std::size_t>(*id) < tok->vocab_size(), "special id");
  return 0;
}
