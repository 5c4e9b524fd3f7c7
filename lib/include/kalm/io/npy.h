#pragma once
// NumPy .npy files (format version 1.0), the second embedding output format of
// kalm-embed, readable by numpy.load. Little-endian, C order.
// Writing goes through AtomicOutputFile. Thread safety: none needed (free functions).

#include <cstdint>
#include <string>
#include <vector>

namespace kalm::io {

// dtype descriptors as numpy spells them: "<f4", "<f2", "<i8", ...
// Writes shape × itemsize bytes from `data`. Throws IoError.
void write_npy(const std::string& path, const std::string& descr,
               const std::vector<std::int64_t>& shape, const void* data, std::size_t itemsize);

// The header text for the given dtype and shape, padded so the data starts at a
// multiple of 64 bytes (as numpy writes it). Exposed for tests.
std::string npy_header(const std::string& descr, const std::vector<std::int64_t>& shape);

struct NpyArray {
  std::string descr;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;
};
// Reads a whole .npy file (v1/v2, C order). Throws FormatError naming the file.
NpyArray read_npy(const std::string& path);

}  // namespace kalm::io
