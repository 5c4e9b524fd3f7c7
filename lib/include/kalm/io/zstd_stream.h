#pragma once
// Byte streams for record files: plain or zstd, chosen the way conventions.md says.
//
// InputStream  - bytes of a file, of stdin ("-" or ""), of a caller's fd or of a
//                string in memory. zstd is detected by the magic bytes at the start
//                (28 B5 2F FD, or a skippable frame 5? 2A 4D 18), never by the name.
//                Concatenated frames and skippable frames are decoded as one stream.
// OutputStream - bytes to a file or stdout through AtomicOutputFile: nothing appears
//                at the target path until finish() succeeds. Compressed when the
//                name ends in ".zst" (or when OutputOptions::compress says so).
//
// Thread safety: none; one thread per stream. Distinct streams are independent.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "kalm/io/atomic_file.h"

namespace kalm::io {

// The start of every zstd frame (little-endian 0xFD2FB528).
inline constexpr unsigned char kZstdMagic[4] = {0x28, 0xB5, 0x2F, 0xFD};

// True when `prefix` (at least 4 bytes) starts a zstd frame or a skippable frame.
bool is_zstd_magic(std::string_view prefix);

class InputStream {
 public:
  // Opens `path` ("-" or "" = stdin). Throws IoError naming the file when it cannot
  // be opened or read (missing, permission, a directory).
  explicit InputStream(const std::string& path);
  // Reads from an fd the caller owns and keeps open (a pipe, a socket); `name` is
  // what error messages call it.
  static std::unique_ptr<InputStream> from_fd(int fd, std::string name);
  // Reads from bytes held in memory (tests, small embedded inputs).
  static std::unique_ptr<InputStream> from_memory(std::string data, std::string name);
  ~InputStream();
  InputStream(const InputStream&) = delete;
  InputStream& operator=(const InputStream&) = delete;

  // Fills up to `size` bytes of `out` with decoded data and returns how many were
  // written; 0 means end of data (never returned before the end). Blocks on pipes.
  // Throws FormatError naming the file for a truncated zstd frame, bytes after a
  // frame that are not a frame, or a corrupted frame (and again on every later
  // call); IoError for read errors.
  std::size_t read(char* out, std::size_t size);

  // The name to show the user ("<stdin>" for stdin).
  const std::string& name() const { return name_; }
  // Whether the data is zstd-compressed (known after construction).
  bool compressed() const { return dctx_ != nullptr; }
  // Compressed bytes consumed so far (== decoded bytes for plain input).
  std::size_t bytes_consumed() const { return consumed_; }

 private:
  struct Tag {};
  InputStream(Tag, int fd, bool owns_fd, std::string name, std::string memory);
  void detect_format();
  std::size_t read_raw(char* out, std::size_t size);
  std::size_t read_zstd(char* out, std::size_t size);
  bool refill_input();
  [[noreturn]] void fail(const std::string& msg);

  std::string name_;
  int fd_ = -1;
  bool owns_fd_ = false;
  bool eof_ = false;                 // the raw source is exhausted
  std::string memory_;               // the data, for from_memory()
  std::size_t memory_pos_ = 0;
  std::unique_ptr<char[]> in_buf_;   // raw bytes read but not yet consumed
  std::size_t in_cap_ = 0, in_pos_ = 0, in_end_ = 0;
  void* dctx_ = nullptr;             // ZSTD_DCtx*, only for zstd input
  bool in_frame_ = false;            // inside a frame that has not ended yet
  std::size_t frames_done_ = 0;
  std::size_t frame_start_ = 0;      // offset of the current frame in the source
  std::size_t consumed_ = 0;
  std::string failure_;              // set once decoding failed; later reads rethrow
};

struct OutputOptions {
  // nullopt: compress iff the path ends in ".zst"; true/false force it (stdout
  // is never compressed unless forced).
  std::optional<bool> compress;
  // zstd level, ZSTD_minCLevel()..ZSTD_maxCLevel() (1..19 are the usual ones).
  int level = 3;
  // zstd worker threads, 0..256. 0 compresses in the calling thread; N >= 1
  // compress in background threads while the caller produces data (1.8x faster
  // writing on a 2-core VM, bench/README.md "## io"). The bytes written are the
  // same for every N >= 1 (not the same as for 0). A libzstd built without
  // threads compresses in the calling thread whatever this says.
  int threads = 1;
};

class OutputStream {
 public:
  // Creates the temporary next to `path` ("-" or "" = stdout). Throws UsageError for
  // compressed output to a terminal or a bad level/thread count, IoError when the
  // temporary cannot be created.
  explicit OutputStream(std::string path, OutputOptions options = {});
  // Without finish() (an exception, an early return) the temporary is removed.
  ~OutputStream();
  OutputStream(const OutputStream&) = delete;
  OutputStream& operator=(const OutputStream&) = delete;

  // Appends bytes (buffered). Throws IoError (disk full, EPIPE) naming the output.
  void write(std::string_view data);
  // Ends the zstd frame, flushes, fsyncs and renames into place. Idempotent.
  // Throws IoError; after a failure nothing is left at the path.
  void finish();

  const std::string& path() const { return file_->path(); }
  bool compressed() const { return cctx_ != nullptr; }
  bool finished() const { return finished_; }

 private:
  void flush_buffer();
  void compress(const char* data, std::size_t size, bool end);

  std::unique_ptr<AtomicOutputFile> file_;
  void* cctx_ = nullptr;             // ZSTD_CCtx*, only for compressed output
  std::string buf_;                  // pending uncompressed bytes
  std::size_t buf_limit_ = 0;
  std::unique_ptr<char[]> zout_;     // compressed bytes on their way to the file
  std::size_t zout_cap_ = 0;
  bool finished_ = false;
};

}  // namespace kalm::io
