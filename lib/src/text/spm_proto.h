#pragma once
// Just enough of sentencepiece's ModelProto wire format to read piece types and
// to swap the normaliser (internal to kalm::text). kalm does not link protobuf
// (spm_shim.h says why), and these two edits need no schema beyond the field
// numbers of sentencepiece_model.proto.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kalm::text::detail {

// sentencepiece_model.proto, SentencePiece.Type.
enum class SpmPieceType : int { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct SpmPiece {
  std::string piece;
  float score = 0.0f;
  SpmPieceType type = SpmPieceType::kNormal;
};

// sentencepiece_model.proto, TrainerSpec.ModelType.
enum class SpmModelType : int { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

// trainer_spec.model_type of a serialized ModelProto (UNIGRAM when unset, as in
// sentencepiece). Throws ModelError naming `source` on malformed bytes.
SpmModelType spm_model_type(std::string_view model_proto, const std::string& source);

// The pieces of a serialized ModelProto, in id order. Throws ModelError naming
// `source` when the bytes are not a well-formed protobuf message.
std::vector<SpmPiece> spm_pieces(std::string_view model_proto, const std::string& source);

// The same ModelProto with its normalizer_spec replaced by sentencepiece's
// "identity" rule (no NFKC, no whitespace folding, no dummy prefix; spaces still
// become U+2581) and without self_test_data (whose expectations assume the old
// normaliser, and which sentencepiece checks at load). Throws ModelError as above.
std::string spm_with_identity_normalizer(std::string_view model_proto, const std::string& source);

}  // namespace kalm::text::detail
