#pragma once
// Compact embedding outputs: sentence-transformers' quantize_embeddings
// (sentence_transformers.util.quantization, v6) for int8, uint8, binary and
// ubinary, and the inverse kalm's readers apply to score quantized files.
//
//   int8/uint8: per dimension d, start = min_d, step = (max_d - min_d) / 255
//     (float32; a step of 0 becomes 1), q = clip(floor((x - start) / step), 0, 255)
//     in float32 arithmetic; uint8 stores q, int8 stores q - 128. The ranges are
//     the corpus's own per-dimension min and max unless given.
//   binary/ubinary: the signs x > 0 packed 8 to a byte, first dimension in the
//     most significant bit, the last byte zero-padded (numpy.packbits); ubinary
//     stores the byte, binary the byte - 128 as int8.
//
// Reading back (dequantize): int8/uint8 become (q [+128]) * step + start, as
// sentence-transformers' rescoring does; binary/ubinary become +1/-1 per
// dimension, so an inner product with a binary query is dim - 2 x Hamming
// distance, and with a float query it ranks as sentence-transformers' rescoring
// (query . bits) does (the two differ by a per-query constant).
//
// Torch-free. Thread safety: pure functions.

#include <cstdint>
#include <string>
#include <vector>

namespace kalm::io {

enum class Quantization { None, Int8, Uint8, Binary, Ubinary };

// "none", "int8", "uint8", "binary" or "ubinary"; anything else is a UsageError
// naming `flag`.
Quantization parse_quantization(const std::string& name, const std::string& flag = "--quantize");
const char* quantization_name(Quantization q);
// Whether the quantization needs per-dimension ranges (int8, uint8).
bool needs_ranges(Quantization q);

// [2, dim] row-major: per-dimension minimum, then maximum, over `rows` rows.
// Throws UsageError when rows < 2 (sentence-transformers refuses one embedding).
std::vector<float> ranges_of(const float* matrix, std::int64_t rows, std::int64_t dim);

struct QuantizedMatrix {
  bool is_signed = false;              // int8 / binary: bytes are int8 values
  std::int64_t rows = 0, cols = 0;     // cols = dim (int8/uint8) or ceil(dim / 8) (binary)
  std::vector<std::uint8_t> bytes;     // rows x cols, row-major
};

// `ranges` ([2, dim]) is used by int8/uint8 only. Throws UsageError on a size mismatch.
QuantizedMatrix quantize(const float* matrix, std::int64_t rows, std::int64_t dim, Quantization q,
                         const std::vector<float>& ranges);

// The float32 matrix [rows, dim] kalm scores a quantized file with (see above).
std::vector<float> dequantize(const std::uint8_t* bytes, std::int64_t rows, std::int64_t dim, Quantization q,
                              const std::vector<float>& ranges);

// Ranges from a file: a .npy [2, dim] float32/float64 array (numpy.save of the
// ranges sentence-transformers takes), or a safetensors file with a
// "quantization_ranges" tensor (kalm-embed's int8/uint8 output). Throws
// FormatError naming the file when the shape is not [2, dim] or a value is not finite.
std::vector<float> read_quantization_ranges(const std::string& path, std::int64_t dim);

}  // namespace kalm::io
