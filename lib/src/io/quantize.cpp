#include "kalm/io/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kalm/error.h"
#include "kalm/io/npy.h"
#include "kalm/io/safetensors.h"

namespace kalm::io {

Quantization parse_quantization(const std::string& name, const std::string& flag) {
  if (name == "none") return Quantization::None;
  if (name == "int8") return Quantization::Int8;
  if (name == "uint8") return Quantization::Uint8;
  if (name == "binary") return Quantization::Binary;
  if (name == "ubinary") return Quantization::Ubinary;
  throw UsageError(flag + " " + name + ": expected none, int8, uint8, binary or ubinary");
}

const char* quantization_name(Quantization q) {
  switch (q) {
    case Quantization::None: return "none";
    case Quantization::Int8: return "int8";
    case Quantization::Uint8: return "uint8";
    case Quantization::Binary: return "binary";
    case Quantization::Ubinary: return "ubinary";
  }
  return "none";
}

bool needs_ranges(Quantization q) { return q == Quantization::Int8 || q == Quantization::Uint8; }

std::vector<float> ranges_of(const float* matrix, std::int64_t rows, std::int64_t dim) {
  if (rows < 2)
    throw UsageError("int8/uint8 ranges cannot be computed from " + std::to_string(rows) +
                     " embedding(s); give --quantize-ranges");
  std::vector<float> r(static_cast<std::size_t>(2 * dim));
  std::copy(matrix, matrix + dim, r.begin());
  std::copy(matrix, matrix + dim, r.begin() + dim);
  for (std::int64_t i = 1; i < rows; ++i)
    for (std::int64_t d = 0; d < dim; ++d) {
      const float v = matrix[i * dim + d];
      r[static_cast<std::size_t>(d)] = std::min(r[static_cast<std::size_t>(d)], v);
      r[static_cast<std::size_t>(dim + d)] = std::max(r[static_cast<std::size_t>(dim + d)], v);
    }
  return r;
}

namespace {
void check_ranges(const std::vector<float>& ranges, std::int64_t dim) {
  if (static_cast<std::int64_t>(ranges.size()) != 2 * dim)
    throw UsageError("quantization ranges hold " + std::to_string(ranges.size()) + " values, expected 2 x " +
                     std::to_string(dim));
}
// sentence-transformers' step: (max - min) / 255 in float32, 0 replaced by 1.
float step_of(const std::vector<float>& ranges, std::int64_t dim, std::int64_t d) {
  const float step = (ranges[static_cast<std::size_t>(dim + d)] - ranges[static_cast<std::size_t>(d)]) / 255.0f;
  return step == 0.0f ? 1.0f : step;
}
}  // namespace

QuantizedMatrix quantize(const float* matrix, std::int64_t rows, std::int64_t dim, Quantization q,
                         const std::vector<float>& ranges) {
  QuantizedMatrix out;
  out.rows = rows;
  out.is_signed = q == Quantization::Int8 || q == Quantization::Binary;
  if (needs_ranges(q)) {
    check_ranges(ranges, dim);
    out.cols = dim;
    out.bytes.resize(static_cast<std::size_t>(rows * dim));
    std::vector<float> steps(static_cast<std::size_t>(dim));
    for (std::int64_t d = 0; d < dim; ++d) steps[static_cast<std::size_t>(d)] = step_of(ranges, dim, d);
    const int offset = q == Quantization::Int8 ? -128 : 0;
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t d = 0; d < dim; ++d) {
        // float32 throughout, as numpy computes it on float32 arrays.
        const float scaled = (matrix[i * dim + d] - ranges[static_cast<std::size_t>(d)]) / steps[static_cast<std::size_t>(d)];
        const float level = std::clamp(std::floor(scaled), 0.0f, 255.0f);
        const int value = static_cast<int>(level) + offset;
        out.bytes[static_cast<std::size_t>(i * dim + d)] = static_cast<std::uint8_t>(value & 0xff);
      }
    return out;
  }
  if (q == Quantization::Binary || q == Quantization::Ubinary) {
    out.cols = (dim + 7) / 8;
    out.bytes.assign(static_cast<std::size_t>(rows * out.cols), 0);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t d = 0; d < dim; ++d)
        if (matrix[i * dim + d] > 0.0f)
          out.bytes[static_cast<std::size_t>(i * out.cols + d / 8)] |= static_cast<std::uint8_t>(0x80u >> (d % 8));
    if (q == Quantization::Binary)
      for (auto& b : out.bytes) b = static_cast<std::uint8_t>(b - 128);  // byte - 128, as an int8
    return out;
  }
  throw InternalError("quantize: no quantization requested");
}

std::vector<float> dequantize(const std::uint8_t* bytes, std::int64_t rows, std::int64_t dim, Quantization q,
                              const std::vector<float>& ranges) {
  std::vector<float> out(static_cast<std::size_t>(rows * dim));
  if (needs_ranges(q)) {
    check_ranges(ranges, dim);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t d = 0; d < dim; ++d) {
        const std::uint8_t b = bytes[i * dim + d];
        const double level = q == Quantization::Int8 ? static_cast<double>(static_cast<std::int8_t>(b)) + 128.0
                                                     : static_cast<double>(b);
        out[static_cast<std::size_t>(i * dim + d)] = static_cast<float>(
            level * static_cast<double>(step_of(ranges, dim, d)) + static_cast<double>(ranges[static_cast<std::size_t>(d)]));
      }
    return out;
  }
  if (q == Quantization::Binary || q == Quantization::Ubinary) {
    const std::int64_t cols = (dim + 7) / 8;
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t d = 0; d < dim; ++d) {
        std::uint8_t b = bytes[i * cols + d / 8];
        if (q == Quantization::Binary) b = static_cast<std::uint8_t>(b + 128);
        out[static_cast<std::size_t>(i * dim + d)] = (b & (0x80u >> (d % 8))) ? 1.0f : -1.0f;
      }
    return out;
  }
  throw InternalError("dequantize: not a quantized matrix");
}

std::vector<float> read_quantization_ranges(const std::string& path, std::int64_t dim) {
  const std::string name = display_name(path);
  std::vector<float> ranges;
  std::vector<std::int64_t> shape;
  const bool is_npy = path.size() >= 4 && path.compare(path.size() - 4, 4, ".npy") == 0;
  if (is_npy) {
    const NpyArray a = read_npy(path);
    shape = a.shape;
    const std::size_t n = a.data.size() / (a.descr == "<f8" ? 8 : 4);
    if (a.descr == "<f4") {
      ranges.resize(n);
      std::memcpy(ranges.data(), a.data.data(), n * 4);
    } else if (a.descr == "<f8") {
      std::vector<double> d(n);
      std::memcpy(d.data(), a.data.data(), n * 8);
      ranges.assign(d.begin(), d.end());
    } else {
      throw FormatError(name + ": quantization ranges must be float32 or float64 (<f4/<f8), not " + a.descr);
    }
  } else {
    const auto file = SafetensorsFile::open(path);
    const TensorInfo* info = file.find("quantization_ranges");
    if (!info)
      throw FormatError(name + ": no tensor named 'quantization_ranges' (kalm-embed writes it with --quantize "
                        "int8/uint8), and not a .npy file");
    if (info->dtype != DType::F32)
      throw FormatError(name + ": tensor 'quantization_ranges' must be F32, not " + std::string(dtype_name(info->dtype)));
    shape = info->shape;
    ranges.resize(info->nbytes() / 4);
    std::memcpy(ranges.data(), file.data(*info), info->nbytes());
  }
  if (shape.size() != 2 || shape[0] != 2 || shape[1] != dim) {
    std::string s;
    for (auto v : shape) s += (s.empty() ? "" : ", ") + std::to_string(v);
    throw FormatError(name + ": quantization ranges have shape [" + s + "], expected [2, " + std::to_string(dim) + "]");
  }
  for (std::size_t i = 0; i < ranges.size(); ++i)
    if (!std::isfinite(ranges[i]))
      throw FormatError(name + ": quantization range " + std::string(i < static_cast<std::size_t>(dim) ? "minimum" : "maximum") +
                        " of dimension " + std::to_string(i % static_cast<std::size_t>(dim)) + " is not finite");
  for (std::int64_t d = 0; d < dim; ++d)
    if (ranges[static_cast<std::size_t>(dim + d)] < ranges[static_cast<std::size_t>(d)])
      throw FormatError(name + ": quantization range of dimension " + std::to_string(d) +
                        " has its maximum below its minimum (row 0 holds minima, row 1 maxima)");
  return ranges;
}

}  // namespace kalm::io
