// A unigram SentencePiece model as a Hugging Face tokenizer.json (tokenizer.h
// says which one and why).
#include <algorithm>
#include <string>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/text/tokenizer.h"
#include "spm_proto.h"
#include "tokenizer_config.h"

namespace kalm::text {

namespace {

constexpr const char* kMetaspace = "\xE2\x96\x81";  // U+2581, sentencepiece's space

void append_added_token(std::string& out, std::size_t id, const std::string& content, bool special) {
  out += "    {\"id\": " + std::to_string(id) + ", \"content\": ";
  io::append_json_string(out, content);
  out += ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": ";
  out += special ? "true}" : "false}";
}

}  // namespace

std::string sentencepiece_to_tokenizer_json(const std::string& model_path) {
  const std::string bytes = detail::read_model_file(model_path);
  using detail::SpmPieceType;
  if (detail::spm_model_type(bytes, model_path) != detail::SpmModelType::kUnigram)
    throw ModelError(model_path + ": trainer_spec.model_type is not UNIGRAM; kalm writes tokenizer.json only for "
                                  "unigram SentencePiece models (transformers converts BPE ones with merges it "
                                  "derives from the pieces, which kalm does not reproduce)");
  const std::vector<detail::SpmPiece> pieces = detail::spm_pieces(bytes, model_path);
  if (pieces.empty()) throw ModelError(model_path + ": a SentencePiece model without pieces");
  std::optional<std::size_t> unk_id;
  for (std::size_t id = 0; id < pieces.size(); ++id) {
    if (pieces[id].type == SpmPieceType::kUnknown) {
      if (unk_id) throw ModelError(model_path + ": more than one piece of type UNKNOWN");
      unk_id = id;
    }
  }
  if (!unk_id) throw ModelError(model_path + ": no piece of type UNKNOWN (sentencepiece requires one)");

  std::string out = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  bool first = true;
  for (std::size_t id = 0; id < pieces.size(); ++id) {
    const SpmPieceType t = pieces[id].type;
    if (t != SpmPieceType::kControl && t != SpmPieceType::kUserDefined && t != SpmPieceType::kUnknown) continue;
    out += first ? "\n" : ",\n";
    first = false;
    append_added_token(out, id, pieces[id].piece, t != SpmPieceType::kUserDefined);
  }
  out += "\n  ],\n";
  out += "  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"";
  out += kMetaspace;
  out += "\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"";
  out += kMetaspace;
  out += "\"}]},\n  \"pre_tokenizer\": null,\n";
  out += "  \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"Sequence\": {\"id\": \"A\", "
         "\"type_id\": 0}}], \"pair\": [{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"Sequence\": {\"id\": "
         "\"B\", \"type_id\": 1}}], \"special_tokens\": {}},\n";
  out += "  \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"";
  out += kMetaspace;
  out += "\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", "
         "\"content\": \" \", \"start\": 1, \"stop\": 0}]},\n";
  out += "  \"model\": {\"type\": \"Unigram\", \"unk_id\": " + std::to_string(*unk_id) +
         ", \"byte_fallback\": true, \"vocab\": [";
  for (std::size_t id = 0; id < pieces.size(); ++id) {
    out += id ? ",\n    [" : "\n    [";
    io::append_json_string(out, pieces[id].piece);
    out += ", ";
    // The float32 score as the double it is, as transformers' converter passes it on.
    io::append_json_number(out, static_cast<double>(pieces[id].score));
    out += "]";
  }
  out += "\n  ]}\n}\n";
  return out;
}

}  // namespace kalm::text
