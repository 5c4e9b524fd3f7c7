#include "spm_proto.h"

#include <cstring>

#include "kalm/error.h"

namespace kalm::text::detail {

namespace {

// ModelProto field numbers (sentencepiece_model.proto).
constexpr uint32_t kPiecesField = 1;
constexpr uint32_t kTrainerSpecField = 2;
constexpr uint32_t kNormalizerSpecField = 3;
constexpr uint32_t kSelfTestDataField = 4;
// TrainerSpec field numbers.
constexpr uint32_t kModelTypeField = 3;
// SentencePiece (one piece) field numbers.
constexpr uint32_t kPieceTextField = 1;
constexpr uint32_t kPieceScoreField = 2;
constexpr uint32_t kPieceTypeField = 3;

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// One field of a message: its number, wire type, the whole encoded field
// (key included) and the value: `varint`, or `bytes` for length-delimited and
// fixed-width fields.
struct Field {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  std::string_view encoded;
  uint64_t varint = 0;
  std::string_view bytes;
};

class Reader {
 public:
  Reader(std::string_view data, const std::string& source, const char* what)
      : data_(data), source_(source), what_(what) {}

  bool done() const { return pos_ >= data_.size(); }

  Field next() {
    Field f;
    const std::size_t start = pos_;
    const uint64_t key = varint();
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire_type = static_cast<uint32_t>(key & 7);
    if (f.number == 0) fail("field number 0");
    switch (f.wire_type) {
      case kVarint:
        f.varint = varint();
        break;
      case kFixed64:
        f.bytes = skip(8);
        break;
      case kFixed32:
        f.bytes = skip(4);
        break;
      case kLengthDelimited: {
        const uint64_t n = varint();
        if (n > data_.size() - pos_) fail("a field runs past the end");
        f.bytes = data_.substr(pos_, static_cast<std::size_t>(n));
        pos_ += static_cast<std::size_t>(n);
        break;
      }
      default:
        fail("unsupported wire type " + std::to_string(f.wire_type));
    }
    f.encoded = data_.substr(start, pos_ - start);
    return f;
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) fail("truncated varint");
      const auto c = static_cast<unsigned char>(data_[pos_++]);
      v |= static_cast<uint64_t>(c & 0x7F) << shift;
      if (c < 0x80) return v;
    }
    fail("varint longer than 10 bytes");
  }

  std::string_view skip(std::size_t n) {
    if (n > data_.size() - pos_) fail("a field runs past the end");
    pos_ += n;
    return data_.substr(pos_ - n, n);
  }

  [[noreturn]] void fail(const std::string& why) const {
    throw ModelError(source_ + ": not a SentencePiece model: " + what_ + " at byte " + std::to_string(pos_) + ": " +
                     why);
  }

  std::string_view data_;
  const std::string& source_;
  const char* what_;
  std::size_t pos_ = 0;
};

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_key(std::string& out, uint32_t number, WireType type) { put_varint(out, (uint64_t{number} << 3) | type); }

}  // namespace

std::vector<SpmPiece> spm_pieces(std::string_view model_proto, const std::string& source) {
  std::vector<SpmPiece> pieces;
  Reader model(model_proto, source, "ModelProto");
  while (!model.done()) {
    const Field f = model.next();
    if (f.number != kPiecesField || f.wire_type != kLengthDelimited) continue;
    SpmPiece piece;
    Reader reader(f.bytes, source, "piece");
    while (!reader.done()) {
      const Field p = reader.next();
      if (p.number == kPieceTextField && p.wire_type == kLengthDelimited) piece.piece = std::string(p.bytes);
      if (p.number == kPieceScoreField && p.wire_type == kFixed32) {
        // protobuf's float: IEEE-754 single precision, little-endian.
        uint32_t bits = 0;
        for (int k = 3; k >= 0; --k) bits = (bits << 8) | static_cast<unsigned char>(p.bytes[k]);
        std::memcpy(&piece.score, &bits, sizeof bits);
      }
      if (p.number == kPieceTypeField && p.wire_type == kVarint) piece.type = static_cast<SpmPieceType>(p.varint);
    }
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

SpmModelType spm_model_type(std::string_view model_proto, const std::string& source) {
  SpmModelType type = SpmModelType::kUnigram;
  Reader model(model_proto, source, "ModelProto");
  while (!model.done()) {
    const Field f = model.next();
    if (f.number != kTrainerSpecField || f.wire_type != kLengthDelimited) continue;
    Reader spec(f.bytes, source, "trainer_spec");
    while (!spec.done()) {
      const Field t = spec.next();
      if (t.number == kModelTypeField && t.wire_type == kVarint) type = static_cast<SpmModelType>(t.varint);
    }
  }
  return type;
}

std::string spm_with_identity_normalizer(std::string_view model_proto, const std::string& source) {
  std::string out;
  out.reserve(model_proto.size() + 32);
  Reader model(model_proto, source, "ModelProto");
  while (!model.done()) {
    const Field f = model.next();
    if (f.number == kNormalizerSpecField || f.number == kSelfTestDataField) continue;
    out.append(f.encoded);
  }
  // NormalizerSpec: name "identity" (1), add_dummy_prefix false (3),
  // remove_extra_whitespaces false (4), escape_whitespaces true (5). No
  // precompiled_charsmap: sentencepiece then leaves every character as it is.
  std::string spec;
  put_key(spec, 1, kLengthDelimited);
  put_varint(spec, 8);
  spec += "identity";
  put_key(spec, 3, kVarint);
  put_varint(spec, 0);
  put_key(spec, 4, kVarint);
  put_varint(spec, 0);
  put_key(spec, 5, kVarint);
  put_varint(spec, 1);
  put_key(out, kNormalizerSpecField, kLengthDelimited);
  put_varint(out, spec.size());
  out += spec;
  return out;
}

}  // namespace kalm::text::detail
