#pragma once
// Output files that appear complete or not at all (conventions.md "Errors").
//
// AtomicOutputFile writes to a hidden temporary file in the target directory and
// renames it into place on commit(). Destroyed without commit() (an exception,
// an early return), the temporary is removed. On SIGINT/SIGTERM/SIGHUP the
// registered temporaries are unlinked before the process dies, so a killed run
// leaves nothing that looks like an output. "-" means stdout (no rename).
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

 private:
  std::string path_;
  std::string temp_path_;
  std::string display_output() const;

  std::FILE* file_ = nullptr;
  int slot_ = -1;  // index in the signal-cleanup registry, -1 if none
  bool committed_ = false;
};

// True when `path` names stdout ("-" or empty).
bool is_stdio(const std::string& path);

// Install the signal handlers that unlink pending temporaries (chaining to any
// handler found). Called by every AtomicOutputFile; exposed for tests.
void install_temp_cleanup_handlers();

}  // namespace kalm::io
