#include "kalm/io/npy.h"

#include <cstring>
#include <fstream>
#include <regex>

#include "kalm/error.h"
#include "kalm/io/atomic_file.h"

namespace kalm::io {

std::string npy_header(const std::string& descr, const std::vector<std::int64_t>& shape) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
    if (i + 1 < shape.size()) dict += " ";
  }
  dict += "), }";
  // magic(6) + version(2) + length(2) + dict + padding + '\n' is a multiple of 64.
  std::size_t total = 10 + dict.size() + 1;
  std::size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict += '\n';
  std::string header("\x93NUMPY\x01\x00", 8);
  header += static_cast<char>(dict.size() & 0xff);
  header += static_cast<char>((dict.size() >> 8) & 0xff);
  return header + dict;
}

void write_npy(const std::string& path, const std::string& descr,
               const std::vector<std::int64_t>& shape, const void* data, std::size_t itemsize) {
  std::size_t count = 1;
  for (auto d : shape) count *= static_cast<std::size_t>(d);
  AtomicOutputFile out(path);
  const std::string header = npy_header(descr, shape);
  out.write(header.data(), header.size());
  out.write(data, count * itemsize);
  out.commit();
}

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path + ": cannot open");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw FormatError(path + ": not a .npy file (bad magic)");
  std::size_t header_len = 0;
  unsigned char len_bytes[4] = {0, 0, 0, 0};
  const int len_size = magic[6] == 1 ? 2 : 4;
  if (!in.read(reinterpret_cast<char*>(len_bytes), len_size)) throw FormatError(path + ": truncated .npy header");
  for (int i = len_size - 1; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  std::string dict(header_len, '\0');
  if (!in.read(dict.data(), static_cast<std::streamsize>(header_len)))
    throw FormatError(path + ": truncated .npy header");
  std::smatch m;
  NpyArray arr;
  if (!std::regex_search(dict, m, std::regex("'descr':\\s*'([^']+)'"))) throw FormatError(path + ": .npy header has no descr");
  arr.descr = m[1];
  if (std::regex_search(dict, m, std::regex("'fortran_order':\\s*True")))
    throw FormatError(path + ": Fortran-order .npy arrays are not supported");
  if (!std::regex_search(dict, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) throw FormatError(path + ": .npy header has no shape");
  std::string dims = m[1];
  std::size_t count = 1;
  const std::regex number("[0-9]+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), number), end; it != end; ++it) {
    arr.shape.push_back(std::stoll(it->str()));
    count *= static_cast<std::size_t>(arr.shape.back());
  }
  std::size_t itemsize = 0;
  if (std::regex_search(arr.descr, m, std::regex("^[<|]?[fiub]([0-9]+)$"))) itemsize = std::stoul(m[1]);
  if (itemsize == 0) throw FormatError(path + ": unsupported .npy dtype " + arr.descr);
  arr.data.resize(count * itemsize);
  if (!in.read(reinterpret_cast<char*>(arr.data.data()), static_cast<std::streamsize>(arr.data.size())))
    throw FormatError(path + ": .npy data is shorter than its shape says");
  return arr;
}

}  // namespace kalm::io
