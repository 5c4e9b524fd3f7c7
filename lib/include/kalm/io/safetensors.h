#pragma once
// Tensor files: Hugging Face safetensors, single files and sharded checkpoints.
//
// Format: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (padded with
// spaces), then the raw little-endian tensor bytes (the "data section"). The JSON
// is an object mapping each tensor name to
//   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// with offsets relative to the data section, plus an optional
// "__metadata__": {str: str}.
//
// This module is torch-free; kalm/model/tensor_io.h turns entries into
// torch::Tensor (zero-copy) and tensors into files.
//
// Reading: SafetensorsFile::open maps the file and validates the whole header
// against the file size before any tensor byte is touched: header length within
// the file and at most kMaxHeaderBytes, valid UTF-8 JSON object, each entry with
// a known dtype, a shape of non-negative integers, integer offsets with
// begin <= end <= data size, shape x dtype size == end - begin, no two tensors
// sharing a byte, no duplicate names, string-only metadata. Unknown fields inside
// an entry are ignored (as the reference implementation does). Gaps between
// tensors are allowed. Every failure is a FormatError whose message names the
// file and the tensor ("header" when no tensor is involved); a missing or
// unreadable file is an IoError.
//
// Writing: SafetensorsWriter collects tensors (owned bytes or borrowed pointers)
// and writes them through AtomicOutputFile, so a failed write leaves no file.
// The layout is the reference library's, byte for byte except for metadata
// order (sorted here, hash order there): "__metadata__" first, tensors ordered
// by dtype width (widest first: I64 F64 F32 I32 BF16 F16 I16 I8 U8 BOOL) then
// name, data packed in that order with no gaps (so every tensor is aligned to
// its element size), header padded with spaces to a multiple of 8 bytes.
//
// Checkpoints: a Hugging Face model directory holds either `model.safetensors`
// or shards `model-00001-of-0000K.safetensors` listed by
// `model.safetensors.index.json` ({"metadata": {"total_size": N},
// "weight_map": {tensor: shard}}). CheckpointReader finds tensors in either;
// write_checkpoint splits tensors into shards by size and writes the index last.
//
// The host must be little-endian (checked at compile time); the bytes are used
// as they are in the file.
//
// Thread safety: a SafetensorsFile / CheckpointReader is immutable after open;
// any number of threads may read from it concurrently. Writers are not
// thread-safe (one thread per writer).

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "kalm/io/atomic_file.h"

namespace kalm::io {

// The element types kalm reads and writes. Others in the format (F8_E4M3,
// U16, ...) are rejected with a FormatError naming the tensor and the dtype.
enum class DType : std::uint8_t { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

inline constexpr DType kAllDTypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16,
                                       DType::I64, DType::I32, DType::I16, DType::I8,
                                       DType::U8,  DType::BOOL};

// Bytes per element: 8, 4, 2, 2, 8, 4, 2, 1, 1, 1.
std::size_t dtype_size(DType dtype) noexcept;
// The format's spelling: "F64", "F32", "F16", "BF16", "I64", ..., "BOOL".
std::string_view dtype_name(DType dtype) noexcept;
// Exact (case-sensitive) spelling as in the format; nullopt when unsupported.
std::optional<DType> try_parse_dtype(std::string_view name) noexcept;
// As try_parse_dtype, but throws FormatError "<context>: unsupported dtype 'X'
// (supported: ...)". `context` names the place, e.g. "model.safetensors: tensor 'w'".
DType parse_dtype(std::string_view name, const std::string& context);

// One tensor entry of a header. begin/end are byte offsets into the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;  // empty = scalar; every dim >= 0
  std::uint64_t begin = 0;
  std::uint64_t end = 0;

  std::uint64_t nbytes() const { return end - begin; }
  std::int64_t numel() const;  // product of shape (1 for a scalar)
};

// A whole file, read-only, kept alive by shared ownership: zero-copy tensors
// hold a reference so that they outlive the SafetensorsFile they came from.
// Regular files are memory-mapped copy-on-write (MAP_PRIVATE): the file on disk
// is never modified, and a stray write through a zero-copy tensor copies the
// page instead of crashing. Pipes and stdin ("-") are read into memory.
// Changing or truncating the file on disk while it is mapped is not supported
// (the kernel may raise SIGBUS); write new files under a new name (as
// AtomicOutputFile does) instead.
class MappedFile {
 public:
  // Throws IoError naming the path when it cannot be opened or read.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Gives the whole pages inside [offset, offset + length) back to the kernel
  // (madvise DONTNEED): they leave this process's resident memory and are read
  // from the file again if touched. Only for bytes nothing will write to or
  // keep a pointer into for long (a tensor already copied elsewhere): written
  // (copy-on-write) pages would revert to the file's bytes. No-op for a pipe's
  // bytes in memory.
  void release_pages(std::size_t offset, std::size_t length) const;

 private:
  MappedFile() = default;
  std::string path_;
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;             // munmap on destruction
  std::vector<std::uint8_t> heap_;  // the bytes of a pipe / stdin
};

// A validated safetensors file. Cheap to copy (the mapping is shared).
class SafetensorsFile {
 public:
  // Largest header accepted (the reference implementation's limit).
  static constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

  // Opens, maps and validates; throws IoError (cannot open/read) or
  // FormatError (malformed; the message names the file and the tensor).
  static SafetensorsFile open(const std::string& path);
  // Validates bytes already in memory; `file->path()` names them in messages.
  static SafetensorsFile from_mapped(std::shared_ptr<const MappedFile> file);

  // Every tensor, sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  // Throws FormatError "<file>: no tensor named 'x'" when absent.
  const TensorInfo& at(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }

  // First byte of the tensor's data (info.nbytes() bytes follow). `info` must
  // come from this file. The pointer is valid while this object or a copy of
  // keepalive() lives. Not necessarily aligned to the element size (files from
  // other writers may pack tensors at any offset).
  const std::uint8_t* data(const TensorInfo& info) const;
  // MappedFile::release_pages for the tensor's bytes: after copying a weight to
  // its parameter, so that loading keeps one copy of the model resident, not two.
  void release_pages(const TensorInfo& info) const;

  // "__metadata__" (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Value of one metadata key, nullopt when absent.
  std::optional<std::string> metadata_value(const std::string& key) const;

  const std::string& path() const { return file_->path(); }
  // Bytes in the data section (file size - 8 - header length).
  std::uint64_t data_size() const { return data_size_; }
  // Owner of the bytes: hold a copy to keep data() pointers valid.
  std::shared_ptr<const void> keepalive() const { return file_; }
  const std::shared_ptr<const MappedFile>& mapped_file() const { return file_; }

 private:
  SafetensorsFile() = default;
  std::shared_ptr<const MappedFile> file_;
  std::uint64_t data_offset_ = 0;  // 8 + header length
  std::uint64_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The NaN and infinite elements of floating-point data (F64, F32, F16, BF16;
// integer and bool data has none): how many, and the index of the first.
// Reads the bytes once, in parallel; no allocation. Model loading and saving
// use it so that a damaged tensor is refused by name instead of turning every
// output into NaN.
struct NonFiniteCount {
  std::uint64_t count = 0;
  std::uint64_t first = 0;  // meaningful when count > 0
};
NonFiniteCount count_non_finite(DType dtype, const std::uint8_t* data, std::uint64_t nbytes);
// "N non-finite values (NaN or infinity; the first at flat index I)": the
// message part the callers share.
std::string describe_non_finite(const NonFiniteCount& found);

// Collects tensors, then writes one safetensors file atomically.
//
// add() validates at once and throws FormatError (message "safetensors writer:
// tensor 'x': ...") on an empty name, the reserved name "__metadata__", a name
// or metadata string that is not valid UTF-8, a duplicate name, a negative
// dimension, or a byte count that is not numel x dtype size.
class SafetensorsWriter {
 public:
  // A tensor queued for writing (borrowed or owned bytes).
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    const std::uint8_t* data;  // `size` bytes; may be null when size == 0
    std::uint64_t size;
  };

  // Borrows `data`: nothing is copied; the bytes must stay valid and unchanged
  // until write() returns.
  void add(std::string name, DType dtype, std::vector<std::int64_t> shape, const void* data,
           std::uint64_t size);
  // Takes ownership of `bytes`.
  void add(std::string name, DType dtype, std::vector<std::int64_t> shape,
           std::vector<std::uint8_t> bytes);

  void set_metadata(const std::string& key, const std::string& value);
  void set_metadata(const std::map<std::string, std::string>& metadata);  // replaces all
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Entries in the order they were added.
  const std::vector<Entry>& entries() const { return entries_; }
  bool contains(std::string_view name) const;
  // Sum of the tensors' bytes.
  std::uint64_t data_size() const;

  // The header exactly as write() puts it after the u64 length: the JSON plus
  // space padding to a multiple of 8 bytes.
  std::string header() const;
  // Total bytes write() produces: 8 + header().size() + data_size().
  std::uint64_t file_size() const;

  // Writes the file through AtomicOutputFile ("-" = stdout). Throws IoError; a
  // failure leaves no file (an existing file of that name stays untouched).
  // May be called more than once.
  void write(const std::string& path) const;
  // Writes the whole file into `out` without committing it (the caller commits,
  // e.g. after every shard of a checkpoint is complete). Throws IoError.
  void write_to(AtomicOutputFile& out) const;

 private:
  std::vector<Entry> entries_;
  std::set<std::string, std::less<>> names_;
  std::list<std::vector<std::uint8_t>> owned_;  // list: addresses stay stable
  std::map<std::string, std::string> metadata_;
};

// ---- sharded checkpoints ---------------------------------------------------

inline constexpr const char* kSingleWeightsName = "model.safetensors";
inline constexpr const char* kWeightsIndexName = "model.safetensors.index.json";

// The tensors of a model directory, from `model.safetensors` or from the shards
// listed by `model.safetensors.index.json` (the single file wins when both
// exist, as in transformers). Validation at open: the index is a JSON object
// with an object "weight_map" of string values and no duplicate keys; shard
// names are relative paths without ".."; every shard exists and is a valid
// safetensors file; every weight_map entry is in the shard it names; no tensor
// is in two shards. Tensors present in a shard but missing from the weight_map
// are still loaded (transformers loads whole shards too).
// Throws ModelError (no weights, missing shard, inconsistent index), FormatError
// (malformed index or shard) or IoError, naming the directory / file / tensor.
class CheckpointReader {
 public:
  // `path`: a model directory, a `.safetensors` file, or an index `.json` file.
  static CheckpointReader open(const std::string& path);
  // Same as open(); the name used by the API sketch.
  static CheckpointReader open_dir(const std::string& dir) { return open(dir); }

  bool contains(std::string_view name) const;
  // Throw ModelError "<dir>: no tensor named 'x' in the checkpoint" when absent.
  const TensorInfo& info(std::string_view name) const;
  const SafetensorsFile& file_of(std::string_view name) const;
  const std::uint8_t* data(std::string_view name) const;

  // All tensor names, sorted.
  std::vector<std::string> names() const;
  std::size_t size() const { return index_.size(); }
  // The files opened (one unless sharded), in shard-name order.
  const std::vector<SafetensorsFile>& files() const { return files_; }
  bool sharded() const { return sharded_; }
  const std::string& path() const { return path_; }
  // Sum of all tensors' bytes.
  std::uint64_t total_size() const;

 private:
  struct Location {
    std::size_t file;    // index in files_
    std::size_t tensor;  // index in files_[file].tensors()
  };
  std::string path_;
  bool sharded_ = false;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, Location, std::less<>> index_;
};

// transformers' default max_shard_size ("5GB").
inline constexpr std::uint64_t kDefaultMaxShardBytes = 5'000'000'000ULL;

// Writes `tensors` (with their metadata in every shard) into directory `dir`
// (created if missing) as a transformers-compatible checkpoint:
//  - everything fits in `max_shard_bytes`: `model.safetensors`;
//  - otherwise shards `model-0000i-of-0000K.safetensors`, filled in the order
//    the tensors were added (a new shard starts when the next tensor would
//    overflow the current one; a tensor larger than the limit gets a shard of
//    its own), plus `model.safetensors.index.json` (sorted keys, indent 2).
// All files are written to temporaries first and renamed into place only when
// every one is complete, shards before the index; then stale weights from an
// earlier save (a single file, an index, or shards `model-*-of-*.safetensors`
// not in the new set) are removed so the directory holds one checkpoint.
// Returns the file names written (relative to dir), index last. Throws IoError
// or UsageError (max_shard_bytes == 0); on failure nothing is renamed.
std::vector<std::string> write_checkpoint(const std::string& dir, const SafetensorsWriter& tensors,
                                          std::uint64_t max_shard_bytes = kDefaultMaxShardBytes);

}  // namespace kalm::io
