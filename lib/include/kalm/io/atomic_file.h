#pragma once
// Output files that appear complete or not at all (conventions.md "Errors").
//
// AtomicOutputFile writes to a hidden temporary file in the target directory and
// renames it into place on commit(). Destroyed without commit() (an exception,
// an early return), the temporary is removed. On SIGINT/SIGTERM/SIGHUP the
// registered temporaries are unlinked before the process dies, so a killed run
// leaves nothing that looks like an output. "-" means stdout (no rename).
//
// Only regular files are replaced. A target that exists and is something else
// (a character device such as /dev/full or /dev/null, a FIFO) is opened and
// written in place: renaming over it would turn the device into a file. A path
// that names this process's stdout or stderr (/dev/stdout, /proc/self/fd/1, or
// the very file stdout is redirected to) is written through that stream. A
// symbolic link is followed: the file it points to is staged and replaced, the
// link stays. Directories and sockets are refused.
//
// Not thread-safe: one writer per file.

#include <cstddef>
#include <cstdio>
#include <string>

namespace kalm::io {

class AtomicOutputFile {
 public:
  explicit AtomicOutputFile(std::string path);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  // Appends bytes; throws IoError naming the path on failure (disk full, EPIPE).
  void write(const void* data, std::size_t size);
  // Flushes, fsyncs and renames into place. Throws IoError. Idempotent.
  void commit();
  // Removes the temporary without committing (also done by the destructor).
  void abort() noexcept;

  const std::string& path() const { return path_; }
  bool is_stdout() const { return path_ == "-"; }
  // Written in place (a device, a FIFO, stdout or stderr): nothing is staged,
  // renamed or removed, and what was written before an error stays written.
  bool is_direct() const { return temp_path_.empty(); }

 private:
  void open_direct(const std::string& target);

  std::string path_;
  std::string temp_path_;    // empty when direct
  std::string target_path_;  // what the rename replaces: path_ with links followed
  std::string display_output() const;
  bool owns_file_ = false;  // fclose() on commit/abort (not for stdout/stderr)

  std::FILE* file_ = nullptr;
  int slot_ = -1;  // index in the signal-cleanup registry, -1 if none
  bool committed_ = false;
};

// True when `path` names stdout ("-" or empty).
bool is_stdio(const std::string& path);

// True when an AtomicOutputFile for `path` writes in place: stdout, or an
// existing file that is not a regular one (a device, a FIFO). Sidecar files
// (OUTPUT.meta.json) make no sense beside those.
bool writes_in_place(const std::string& path);

// Install the signal handlers that unlink pending temporaries (chaining to any
// handler found). Called by every AtomicOutputFile; exposed for tests.
void install_temp_cleanup_handlers();

}  // namespace kalm::io
