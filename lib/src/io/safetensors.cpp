#include "kalm/io/safetensors.h"

#include <fcntl.h>
#include <simdjson.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "kalm/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian and is used without byte swapping");

namespace kalm::io {
namespace {

constexpr std::string_view kMetadataKey = "__metadata__";

std::string quote_name(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// numel with every overflow caught. Dims must already be >= 0. Zero dims make
// numel 0, but the product of the non-zero dims must still fit in int64 so that
// contiguous strides stay representable for whoever views the tensor.
std::optional<std::uint64_t> checked_numel(const std::vector<std::int64_t>& shape) {
  std::uint64_t nonzero = 1;
  bool has_zero = false;
  for (std::int64_t d : shape) {
    if (d == 0) {
      has_zero = true;
      continue;
    }
    if (__builtin_mul_overflow(nonzero, static_cast<std::uint64_t>(d), &nonzero))
      return std::nullopt;
    if (nonzero > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return std::nullopt;
  }
  return has_zero ? 0 : nonzero;
}

std::optional<std::uint64_t> checked_nbytes(const std::vector<std::int64_t>& shape, DType dtype) {
  auto numel = checked_numel(shape);
  if (!numel) return std::nullopt;
  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(*numel, static_cast<std::uint64_t>(dtype_size(dtype)), &bytes))
    return std::nullopt;
  return bytes;
}

// The reference library orders data by dtype, widest alignment first (its Dtype
// enum is declared in increasing alignment), then by name. Copying that order
// makes our files byte-identical to its output and keeps every tensor aligned.
int alignment_rank(DType dtype) {
  switch (dtype) {
    case DType::BOOL:
      return 0;
    case DType::U8:
      return 1;
    case DType::I8:
      return 2;
    case DType::I16:
      return 3;
    case DType::F16:
      return 4;
    case DType::BF16:
      return 5;
    case DType::I32:
      return 6;
    case DType::F32:
      return 7;
    case DType::F64:
      return 8;
    case DType::I64:
      return 9;
  }
  return 0;
}

// JSON string escaping as serde_json does it (the reference writer), so that
// headers compare byte for byte: only '"', '\\' and control characters.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += kHex[u >> 4];
          out += kHex[u & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

[[noreturn]] void fail(const std::string& file, const std::string& subject,
                       const std::string& what) {
  throw FormatError(display_name(file) + ": " + subject + ": " + what);
}

std::string tensor_subject(std::string_view name) { return "tensor " + quote_name(name); }

std::string json_type_name(simdjson::dom::element_type t) {
  using T = simdjson::dom::element_type;
  switch (t) {
    case T::ARRAY:
      return "an array";
    case T::OBJECT:
      return "an object";
    case T::INT64:
    case T::UINT64:
      return "an integer";
    case T::DOUBLE:
      return "a non-integer number";
    case T::STRING:
      return "a string";
    case T::BOOL:
      return "a boolean";
    case T::NULL_VALUE:
      return "null";
  }
  return "an unknown JSON value";
}

// A non-negative JSON integer; `what` names the field in the message.
std::uint64_t json_uint(simdjson::dom::element e, const std::string& file,
                        const std::string& subject, const std::string& what) {
  using T = simdjson::dom::element_type;
  switch (e.type()) {
    case T::UINT64:
      return e.get_uint64().value_unsafe();
    case T::INT64: {
      std::int64_t v = e.get_int64().value_unsafe();
      if (v < 0) fail(file, subject, what + " is " + std::to_string(v) + ", must be >= 0");
      return static_cast<std::uint64_t>(v);
    }
    default:
      fail(file, subject,
           what + " must be a non-negative integer, got " + json_type_name(e.type()));
  }
}

void read_all_fd(int fd, std::vector<std::uint8_t>& out, const std::string& path) {
  constexpr std::size_t kChunk = 1 << 20;
  std::size_t used = 0;
  for (;;) {
    if (out.size() - used < kChunk) out.resize(used + kChunk);
    ssize_t got = ::read(fd, out.data() + used, out.size() - used);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw IoError(display_name(path) + ": read failed: " + std::strerror(errno));
    }
    if (got == 0) break;
    used += static_cast<std::size_t>(got);
  }
  out.resize(used);
  out.shrink_to_fit();
}

}  // namespace

// ---- dtypes ------------------------------------------------------------------

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 1;
}

std::string_view dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::F64:
      return "F64";
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::BOOL:
      return "BOOL";
  }
  return "?";
}

std::optional<DType> try_parse_dtype(std::string_view name) noexcept {
  for (DType d : kAllDTypes)
    if (dtype_name(d) == name) return d;
  return std::nullopt;
}

DType parse_dtype(std::string_view name, const std::string& context) {
  if (auto d = try_parse_dtype(name)) return *d;
  std::string supported;
  for (DType d : kAllDTypes) {
    if (!supported.empty()) supported += ' ';
    supported += dtype_name(d);
  }
  throw FormatError(context + ": unsupported dtype " + quote_name(name) +
                    " (supported: " + supported + ")");
}

namespace {

// An element is NaN or infinite exactly when all its exponent bits are set.
template <typename Bits>
NonFiniteCount scan_exponent(const std::uint8_t* data, std::uint64_t n, Bits exponent_mask) {
  std::uint64_t count = 0;
  std::uint64_t first = n;
  const std::int64_t total = static_cast<std::int64_t>(n);
#pragma omp parallel for reduction(+ : count) reduction(min : first) schedule(static) if (total > (1 << 20))
  for (std::int64_t i = 0; i < total; ++i) {
    Bits bits;
    std::memcpy(&bits, data + static_cast<std::uint64_t>(i) * sizeof(Bits), sizeof(Bits));  // data may be unaligned
    if ((bits & exponent_mask) == exponent_mask) {
      ++count;
      first = std::min(first, static_cast<std::uint64_t>(i));
    }
  }
  return {count, count > 0 ? first : 0};
}

}  // namespace

NonFiniteCount count_non_finite(DType dtype, const std::uint8_t* data, std::uint64_t nbytes) {
  switch (dtype) {
    case DType::F64: return scan_exponent<std::uint64_t>(data, nbytes / 8, 0x7FF0000000000000ull);
    case DType::F32: return scan_exponent<std::uint32_t>(data, nbytes / 4, 0x7F800000u);
    case DType::F16: return scan_exponent<std::uint16_t>(data, nbytes / 2, std::uint16_t{0x7C00});
    case DType::BF16: return scan_exponent<std::uint16_t>(data, nbytes / 2, std::uint16_t{0x7F80});
    default: return {};
  }
}

std::string describe_non_finite(const NonFiniteCount& found) {
  return std::to_string(found.count) + (found.count == 1 ? " non-finite value" : " non-finite values") +
         " (NaN or infinity; the first at flat index " + std::to_string(found.first) + ")";
}

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;  // validated at open: cannot overflow
  return n;
}

// ---- MappedFile ----------------------------------------------------------------

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  if (is_stdio(path)) {
    file->path_ = "-";
    read_all_fd(STDIN_FILENO, file->heap_, path);
    file->data_ = file->heap_.data();
    file->size_ = file->heap_.size();
    return file;
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(display_name(path) + ": cannot open: " + std::strerror(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw IoError(display_name(path) + ": cannot stat: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw IoError(display_name(path) + ": is a directory, not a file");
  if (!S_ISREG(st.st_mode)) {  // a pipe or a character device: cannot be mapped
    read_all_fd(fd, file->heap_, path);
    file->data_ = file->heap_.data();
    file->size_ = file->heap_.size();
    return file;
  }
  file->size_ = static_cast<std::size_t>(st.st_size);
  if (file->size_ == 0) return file;  // mmap rejects length 0
  // Copy-on-write and writable: the file never changes, and an in-place op on a
  // zero-copy tensor copies a page instead of faulting. Read-only as a fallback
  // where the kernel refuses to reserve the private pages.
  void* p = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) throw IoError(display_name(path) + ": cannot map: " + std::strerror(errno));
  file->data_ = static_cast<std::uint8_t*>(p);
  file->mapped_ = true;
  return file;
}

void MappedFile::release_pages(std::size_t offset, std::size_t length) const {
  if (!mapped_ || length == 0 || offset >= size_) return;
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const auto base = reinterpret_cast<std::uintptr_t>(data_);
  const std::uintptr_t begin = (base + offset + page - 1) / page * page;
  const std::uintptr_t end = (base + std::min(size_, offset + length)) / page * page;
  // Advice only: a failure leaves the pages resident, which is still correct.
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (mapped_) ::munmap(data_, size_);
}

// ---- SafetensorsFile -----------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  return from_mapped(MappedFile::open(path));
}

SafetensorsFile SafetensorsFile::from_mapped(std::shared_ptr<const MappedFile> mapped) {
  KALM_ASSERT(mapped != nullptr, "from_mapped: null file");
  const std::string& file = mapped->path();
  const std::uint64_t file_size = mapped->size();
  if (file_size < 8)
    fail(file, "header",
         "file is " + std::to_string(file_size) +
             " bytes, too short for a safetensors file (at least 8)");
  std::uint64_t n = 0;
  std::memcpy(&n, mapped->data(), 8);
  if (n > kMaxHeaderBytes)
    fail(file, "header",
         "header length " + std::to_string(n) + " exceeds the limit of " +
             std::to_string(kMaxHeaderBytes) + " bytes (not a safetensors file?)");
  if (n > file_size - 8)
    fail(file, "header",
         "header length " + std::to_string(n) + " runs past the end of the file (" +
             std::to_string(file_size) + " bytes): truncated or not safetensors");

  SafetensorsFile out;
  out.file_ = std::move(mapped);
  out.data_offset_ = 8 + n;
  out.data_size_ = file_size - 8 - n;
  const std::uint64_t data_size = out.data_size_;

  simdjson::dom::parser parser;
  simdjson::padded_string json(reinterpret_cast<const char*>(out.file_->data() + 8),
                               static_cast<std::size_t>(n));
  simdjson::dom::element root;
  if (auto err = parser.parse(json).get(root))
    fail(file, "header", std::string("not valid JSON: ") + simdjson::error_message(err));
  simdjson::dom::object root_object;
  if (root.get(root_object) != simdjson::SUCCESS)
    fail(file, "header", "must be a JSON object, got " + json_type_name(root.type()));

  // simdjson hands out every occurrence of a repeated key; a repeated tensor
  // name would silently shadow data, so it is an error.
  std::unordered_set<std::string_view> seen;
  for (auto field : root_object) {
    std::string_view key = field.key;
    if (!seen.insert(key).second) {
      if (key == kMetadataKey) fail(file, "header", "\"__metadata__\" appears twice");
      fail(file, tensor_subject(key), "name appears twice in the header");
    }
    if (key == kMetadataKey) {
      if (field.value.is_null()) continue;
      simdjson::dom::object meta;
      if (field.value.get(meta) != simdjson::SUCCESS)
        fail(file, "header",
             "\"__metadata__\" must be an object of strings, got " +
                 json_type_name(field.value.type()));
      for (auto kv : meta) {
        std::string_view value;
        if (kv.value.get(value) != simdjson::SUCCESS)
          fail(file, "header",
               "\"__metadata__\" value for " + quote_name(kv.key) + " must be a string, got " +
                   json_type_name(kv.value.type()));
        if (!out.metadata_.emplace(std::string(kv.key), std::string(value)).second)
          fail(file, "header", "\"__metadata__\" key " + quote_name(kv.key) + " appears twice");
      }
      continue;
    }

    const std::string subject = tensor_subject(key);
    simdjson::dom::object entry;
    if (field.value.get(entry) != simdjson::SUCCESS)
      fail(file, subject, "entry must be an object, got " + json_type_name(field.value.type()));
    std::optional<simdjson::dom::element> dtype_el, shape_el, offsets_el;
    for (auto f : entry) {
      std::optional<simdjson::dom::element>* slot = nullptr;
      if (f.key == "dtype")
        slot = &dtype_el;
      else if (f.key == "shape")
        slot = &shape_el;
      else if (f.key == "data_offsets")
        slot = &offsets_el;
      else
        continue;  // unknown fields are ignored, as by the reference reader
      if (slot->has_value()) fail(file, subject, "field " + quote_name(f.key) + " appears twice");
      *slot = f.value;
    }
    if (!dtype_el) fail(file, subject, "missing field 'dtype'");
    if (!shape_el) fail(file, subject, "missing field 'shape'");
    if (!offsets_el) fail(file, subject, "missing field 'data_offsets'");

    TensorInfo info;
    info.name = std::string(key);
    std::string_view dtype_str;
    if (dtype_el->get(dtype_str) != simdjson::SUCCESS)
      fail(file, subject, "'dtype' must be a string, got " + json_type_name(dtype_el->type()));
    info.dtype = parse_dtype(dtype_str, display_name(file) + ": " + subject);

    simdjson::dom::array shape;
    if (shape_el->get(shape) != simdjson::SUCCESS)
      fail(file, subject, "'shape' must be an array, got " + json_type_name(shape_el->type()));
    for (auto dim : shape) {
      const std::string what = "shape[" + std::to_string(info.shape.size()) + "]";
      std::uint64_t d = json_uint(dim, file, subject, what);
      if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail(file, subject, what + " is too large");
      info.shape.push_back(static_cast<std::int64_t>(d));
    }

    simdjson::dom::array offsets;
    if (offsets_el->get(offsets) != simdjson::SUCCESS || offsets.size() != 2)
      fail(file, subject, "'data_offsets' must be an array [begin, end]");
    info.begin = json_uint(offsets.at(0).value_unsafe(), file, subject, "data_offsets[0]");
    info.end = json_uint(offsets.at(1).value_unsafe(), file, subject, "data_offsets[1]");
    const std::string span =
        "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) + "]";
    if (info.begin > info.end) fail(file, subject, span + ": begin is after end");
    if (info.end > data_size)
      fail(file, subject,
           span + " run past the end of the data section (" + std::to_string(data_size) +
               " bytes): truncated file?");
    auto expected = checked_nbytes(info.shape, info.dtype);
    if (!expected) fail(file, subject, "shape " + shape_string(info.shape) + " is too large");
    if (*expected != info.nbytes())
      fail(file, subject,
           "shape " + shape_string(info.shape) + " x " + std::string(dtype_name(info.dtype)) +
               " (" + std::to_string(dtype_size(info.dtype)) + " bytes) needs " +
               std::to_string(*expected) + " bytes, but " + span + " span " +
               std::to_string(info.nbytes()));
    out.tensors_.push_back(std::move(info));
  }

  // Two tensors sharing bytes would alias each other's data.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : out.tensors_)
    if (t.nbytes() > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  const TensorInfo* furthest = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (furthest && t->begin < furthest->end)
      fail(file, tensor_subject(t->name),
           "data_offsets [" + std::to_string(t->begin) + ", " + std::to_string(t->end) +
               "] overlap tensor " + quote_name(furthest->name) + " [" +
               std::to_string(furthest->begin) + ", " + std::to_string(furthest->end) + "]");
    if (!furthest || t->end > furthest->end) furthest = t;
  }

  std::sort(out.tensors_.begin(), out.tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return out;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  throw FormatError(display_name(path()) + ": no tensor named " + quote_name(name));
}

const std::uint8_t* SafetensorsFile::data(const TensorInfo& info) const {
  KALM_ASSERT(info.end <= data_size_, "TensorInfo of another file: " + info.name);
  return file_->data() + data_offset_ + info.begin;
}

void SafetensorsFile::release_pages(const TensorInfo& info) const {
  file_->release_pages(static_cast<std::size_t>(data(info) - file_->data()), static_cast<std::size_t>(info.nbytes()));
}

std::optional<std::string> SafetensorsFile::metadata_value(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return std::nullopt;
  return it->second;
}

// ---- SafetensorsWriter -----------------------------------------------------------

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<std::int64_t> shape,
                            const void* data, std::uint64_t size) {
  const std::string subject = "safetensors writer: tensor " + quote_name(name) + ": ";
  if (name.empty()) throw FormatError("safetensors writer: empty tensor name");
  if (name == kMetadataKey) throw FormatError(subject + "name is reserved for metadata");
  if (!simdjson::validate_utf8(name.data(), name.size()))
    throw FormatError(subject + "name is not valid UTF-8");
  if (names_.count(name)) throw FormatError(subject + "added twice");
  for (std::int64_t d : shape)
    if (d < 0) throw FormatError(subject + "negative dimension in shape " + shape_string(shape));
  auto expected = checked_nbytes(shape, dtype);
  if (!expected) throw FormatError(subject + "shape " + shape_string(shape) + " is too large");
  if (*expected != size)
    throw FormatError(subject + "shape " + shape_string(shape) + " x " +
                      std::string(dtype_name(dtype)) + " needs " + std::to_string(*expected) +
                      " bytes, got " + std::to_string(size));
  if (size > 0 && data == nullptr) throw FormatError(subject + "null data");
  names_.insert(name);
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape),
                           static_cast<const std::uint8_t*>(data), size});
}

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<std::int64_t> shape,
                            std::vector<std::uint8_t> bytes) {
  owned_.push_back(std::move(bytes));
  try {
    add(std::move(name), dtype, std::move(shape), owned_.back().data(), owned_.back().size());
  } catch (...) {
    owned_.pop_back();
    throw;
  }
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  if (!simdjson::validate_utf8(key.data(), key.size()))
    throw FormatError("safetensors writer: metadata key is not valid UTF-8");
  if (!simdjson::validate_utf8(value.data(), value.size()))
    throw FormatError("safetensors writer: metadata value for " + quote_name(key) +
                      " is not valid UTF-8");
  metadata_[key] = value;
}

void SafetensorsWriter::set_metadata(const std::map<std::string, std::string>& metadata) {
  metadata_.clear();
  for (const auto& [k, v] : metadata) set_metadata(k, v);
}

bool SafetensorsWriter::contains(std::string_view name) const {
  return names_.find(name) != names_.end();
}

std::uint64_t SafetensorsWriter::data_size() const {
  std::uint64_t total = 0;
  for (const auto& e : entries_) total += e.size;
  return total;
}

namespace {
std::vector<const SafetensorsWriter::Entry*> data_order(
    const std::vector<SafetensorsWriter::Entry>& entries) {
  std::vector<const SafetensorsWriter::Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    int ra = alignment_rank(a->dtype), rb = alignment_rank(b->dtype);
    return ra != rb ? ra > rb : a->name < b->name;
  });
  return order;
}
}  // namespace

std::string SafetensorsWriter::header() const {
  std::string json = "{";
  bool first = true;
  if (!metadata_.empty()) {
    json += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata_) {
      if (!first) json += ',';
      first = false;
      append_json_string(json, k);
      json += ':';
      append_json_string(json, v);
    }
    json += '}';
    first = false;
  }
  std::uint64_t offset = 0;
  for (const Entry* e : data_order(entries_)) {
    if (!first) json += ',';
    first = false;
    append_json_string(json, e->name);
    json += ":{\"dtype\":\"";
    json += dtype_name(e->dtype);
    json += "\",\"shape\":[";
    for (std::size_t i = 0; i < e->shape.size(); ++i) {
      if (i) json += ',';
      json += std::to_string(e->shape[i]);
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," +
            std::to_string(offset + e->size) + "]}";
    offset += e->size;
  }
  json += '}';
  // Padding to 8 bytes puts the data section on an 8-byte boundary of the file.
  json.append((8 - json.size() % 8) % 8, ' ');
  return json;
}

std::uint64_t SafetensorsWriter::file_size() const { return 8 + header().size() + data_size(); }

void SafetensorsWriter::write_to(AtomicOutputFile& out) const {
  const std::string head = header();
  const std::uint64_t n = head.size();
  out.write(&n, sizeof n);
  out.write(head.data(), head.size());
  for (const Entry* e : data_order(entries_)) out.write(e->data, static_cast<std::size_t>(e->size));
}

void SafetensorsWriter::write(const std::string& path) const {
  AtomicOutputFile out(path);
  write_to(out);
  out.commit();
}

}  // namespace kalm::io
