#include "kalm/io/zstd_stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kalm/error.h"

namespace kalm::io {
namespace {

constexpr std::size_t kMagicSize = 4;

ZSTD_DCtx* dctx_of(void* p) { return static_cast<ZSTD_DCtx*>(p); }
ZSTD_CCtx* cctx_of(void* p) { return static_cast<ZSTD_CCtx*>(p); }

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool is_zstd_magic(std::string_view prefix) {
  if (prefix.size() < kMagicSize) return false;
  auto b = [&](std::size_t i) { return static_cast<unsigned char>(prefix[i]); };
  if (b(0) == kZstdMagic[0] && b(1) == kZstdMagic[1] && b(2) == kZstdMagic[2] &&
      b(3) == kZstdMagic[3])
    return true;
  // Skippable frames: magic 0x184D2A5?, little-endian.
  return (b(0) & 0xF0) == 0x50 && b(1) == 0x2A && b(2) == 0x4D && b(3) == 0x18;
}

// ---------------------------------------------------------------------------
// InputStream

InputStream::InputStream(const std::string& path) : name_(display_name(path)) {
  if (path.empty() || path == "-") {
    fd_ = STDIN_FILENO;
  } else {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw IoError(name_ + ": cannot open: " + std::strerror(errno));
    owns_fd_ = true;
    struct stat st {};
    if (::fstat(fd_, &st) == 0 && S_ISDIR(st.st_mode)) {
      ::close(fd_);
      fd_ = -1;
      throw IoError(name_ + ": cannot read: is a directory");
    }
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  detect_format();
}

InputStream::InputStream(Tag, int fd, bool owns_fd, std::string name, std::string memory)
    : name_(std::move(name)), fd_(fd), owns_fd_(owns_fd), memory_(std::move(memory)) {
  detect_format();
}

std::unique_ptr<InputStream> InputStream::from_fd(int fd, std::string name) {
  if (fd < 0) throw UsageError(name + ": invalid file descriptor");
  return std::unique_ptr<InputStream>(new InputStream(Tag{}, fd, false, std::move(name), {}));
}

std::unique_ptr<InputStream> InputStream::from_memory(std::string data, std::string name) {
  return std::unique_ptr<InputStream>(
      new InputStream(Tag{}, -1, false, std::move(name), std::move(data)));
}

InputStream::~InputStream() {
  if (dctx_) ZSTD_freeDCtx(dctx_of(dctx_));
  if (owns_fd_ && fd_ >= 0) ::close(fd_);
}

std::size_t InputStream::read_raw(char* out, std::size_t size) {
  if (fd_ < 0) {
    std::size_t n = std::min(size, memory_.size() - memory_pos_);
    std::memcpy(out, memory_.data() + memory_pos_, n);
    memory_pos_ += n;
    return n;
  }
  for (;;) {
    ssize_t n = ::read(fd_, out, size);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    throw IoError(name_ + ": read failed: " + std::strerror(errno));
  }
}

void InputStream::detect_format() {
  // Enough for ZSTD_decompressStream to make progress in big steps; the same
  // buffer holds the first bytes looked at for the magic.
  in_cap_ = ZSTD_DStreamInSize();
  in_buf_.reset(new char[in_cap_]);
  while (in_end_ < kMagicSize) {
    std::size_t n = read_raw(in_buf_.get() + in_end_, in_cap_ - in_end_);
    if (n == 0) break;
    in_end_ += n;
  }
  if (in_end_ == 0) eof_ = true;
  if (!is_zstd_magic(std::string_view(in_buf_.get(), in_end_))) return;
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (!dctx) throw IoError(name_ + ": out of memory for the zstd decoder");
  dctx_ = dctx;
}

bool InputStream::refill_input() {
  if (eof_) return false;
  in_pos_ = in_end_ = 0;
  std::size_t n = read_raw(in_buf_.get(), in_cap_);
  if (n == 0) {
    eof_ = true;
    return false;
  }
  in_end_ = n;
  return true;
}

void InputStream::fail(const std::string& msg) {
  failure_ = msg;
  throw FormatError(msg);
}

std::size_t InputStream::read(char* out, std::size_t size) {
  // A decoder that failed once is in no state to go on; every later read fails
  // the same way instead of returning garbage or a silent end.
  if (!failure_.empty()) throw FormatError(failure_);
  if (size == 0) return 0;
  if (dctx_) return read_zstd(out, size);
  if (in_pos_ < in_end_) {
    std::size_t n = std::min(size, in_end_ - in_pos_);
    std::memcpy(out, in_buf_.get() + in_pos_, n);
    in_pos_ += n;
    consumed_ += n;
    return n;
  }
  if (eof_) return 0;
  std::size_t n = read_raw(out, size);
  if (n == 0) eof_ = true;
  consumed_ += n;
  return n;
}

std::size_t InputStream::read_zstd(char* out, std::size_t size) {
  ZSTD_outBuffer output{out, size, 0};
  while (output.pos == 0) {
    bool have_input = in_pos_ < in_end_ || refill_input();
    if (!have_input && !in_frame_) return 0;
    if (!in_frame_) {
      in_frame_ = true;
      frame_start_ = consumed_;
    }
    // At the end of the source the decoder may still hold output of the last
    // frame; an empty input lets it flush that before we call the frame truncated.
    ZSTD_inBuffer input{in_buf_.get(), in_end_, in_pos_};
    std::size_t ret = ZSTD_decompressStream(dctx_of(dctx_), &output, &input);
    consumed_ += input.pos - in_pos_;
    in_pos_ = input.pos;
    if (ZSTD_isError(ret)) {
      ZSTD_ErrorCode code = ZSTD_getErrorCode(ret);
      if (code == ZSTD_error_prefix_unknown && frames_done_ > 0)
        fail(name_ + ": data after zstd frame " + std::to_string(frames_done_) +
                          " (at byte " + std::to_string(frame_start_) +
                          ") is not a zstd frame (trailing garbage?)");
      if (code == ZSTD_error_frameParameter_windowTooLarge)
        fail(name_ + ": zstd frame " + std::to_string(frames_done_ + 1) +
                          " needs a window larger than 128 MiB (compressed with --long?); "
                          "decompress it with zstd first");
      fail(name_ + ": corrupted zstd data in frame " +
                        std::to_string(frames_done_ + 1) + ": " + ZSTD_getErrorName(ret));
    }
    if (ret == 0) {
      // A frame ended and everything it holds has been written out.
      in_frame_ = false;
      ++frames_done_;
      continue;
    }
    if (!have_input && output.pos == 0) {
      if (consumed_ - frame_start_ < kMagicSize && frames_done_ > 0)
        fail(name_ + ": " + std::to_string(consumed_ - frame_start_) +
                          " stray byte(s) after the last zstd frame");
      fail(name_ + ": truncated zstd frame (the data ends inside frame " +
                        std::to_string(frames_done_ + 1) + ", which starts at byte " +
                        std::to_string(frame_start_) + ")");
    }
  }
  return output.pos;
}

// ---------------------------------------------------------------------------
// OutputStream

OutputStream::OutputStream(std::string path, OutputOptions options) {
  if (path.empty()) path = "-";
  bool to_stdout = path == "-";
  bool compress = options.compress.value_or(!to_stdout && ends_with(path, ".zst"));
  if (compress) {
    if (options.level < ZSTD_minCLevel() || options.level > ZSTD_maxCLevel())
      throw UsageError("zstd level " + std::to_string(options.level) + " is out of range " +
                       std::to_string(ZSTD_minCLevel()) + ".." +
                       std::to_string(ZSTD_maxCLevel()));
    if (options.threads < 0 || options.threads > 256)
      throw UsageError("zstd threads " + std::to_string(options.threads) +
                       " is out of range 0..256");
    if (to_stdout && ::isatty(STDOUT_FILENO))
      throw UsageError(
          "refusing to write zstd-compressed data to a terminal; redirect stdout or "
          "name an output file");
  }
  file_ = std::make_unique<AtomicOutputFile>(path);
  if (compress) {
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    if (!cctx) throw IoError(file_->path() + ": out of memory for the zstd encoder");
    cctx_ = cctx;
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, options.level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    // Fails harmlessly (and compression stays in this thread) when libzstd was
    // built without multithreading: same format, only slower.
    if (options.threads > 0) ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, options.threads);
    buf_limit_ = ZSTD_CStreamInSize();
    zout_cap_ = ZSTD_CStreamOutSize();
    zout_.reset(new char[zout_cap_]);
  } else {
    buf_limit_ = std::size_t{1} << 18;
  }
  buf_.reserve(buf_limit_);
}

OutputStream::~OutputStream() {
  if (cctx_) ZSTD_freeCCtx(cctx_of(cctx_));
  // file_'s destructor removes the temporary unless finish() committed it.
}

void OutputStream::write(std::string_view data) {
  if (finished_) throw IoError(file_->path() + ": write after finish");
  if (buf_.size() + data.size() <= buf_limit_) {
    buf_.append(data);
    return;
  }
  flush_buffer();
  if (data.size() >= buf_limit_) {
    // Big pieces skip the copy into the buffer.
    if (cctx_)
      compress(data.data(), data.size(), false);
    else
      file_->write(data.data(), data.size());
    return;
  }
  buf_.append(data);
}

void OutputStream::flush_buffer() {
  if (buf_.empty()) return;
  if (cctx_)
    compress(buf_.data(), buf_.size(), false);
  else
    file_->write(buf_.data(), buf_.size());
  buf_.clear();
}

void OutputStream::compress(const char* data, std::size_t size, bool end) {
  ZSTD_inBuffer input{data, size, 0};
  ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
  for (;;) {
    ZSTD_outBuffer output{zout_.get(), zout_cap_, 0};
    std::size_t remaining = ZSTD_compressStream2(cctx_of(cctx_), &output, &input, mode);
    if (ZSTD_isError(remaining))
      throw IoError(file_->path() + ": zstd compression failed: " +
                    ZSTD_getErrorName(remaining));
    file_->write(zout_.get(), output.pos);
    // e_continue is done once the input is consumed; e_end once nothing remains.
    if (end ? remaining == 0 : input.pos == input.size) break;
  }
}

void OutputStream::finish() {
  if (finished_) return;
  flush_buffer();
  if (cctx_) compress(nullptr, 0, true);
  file_->commit();
  finished_ = true;
}

}  // namespace kalm::io
