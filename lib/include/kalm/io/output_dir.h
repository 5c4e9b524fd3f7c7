#pragma once
// Output directories and sets of outputs: claims for the life of a run,
// staging, and publishing a staged export.
//
// Claims on outputs for the life of a run, so that two runs never interleave
// their writes (conventions.md "Errors"): a second run that wants an output a
// live run holds exits 1 naming the holder, instead of mixing one run's
// checkpoints, model or rejects with the other's.
//
// A claim is an exclusive flock(2) on a hidden lock file (".kalm.lock" inside
// an output directory; ".NAME.kalm.lock" beside an output file) holding
// "pid P on host H, TOOL started T". The kernel drops it when the process dies,
// however it dies, so a crashed run never blocks the next one. The lock file is
// removed on release. On a filesystem without locks (some network mounts) the
// claim warns once on stderr and goes on unlocked.
//
// Outputs written in place (stdout, devices, FIFOs: see atomic_file.h) are
// not claimed.

#include <string>
#include <vector>

namespace kalm::io {

class OutputLock {
 public:
  OutputLock() = default;
  // The output directory `dir` (created if missing). Throws IoError naming the
  // directory and the holder when another run holds it.
  static OutputLock directory(const std::string& dir, const std::string& tool);
  // Output files that belong together (an output, its rejects, its
  // .meta.json): all or none. Throws IoError naming the first held one.
  static OutputLock files(const std::vector<std::string>& paths, const std::string& tool);

  OutputLock(OutputLock&& other) noexcept;
  OutputLock& operator=(OutputLock&& other) noexcept;
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;
  ~OutputLock();

  // Releases every claim now (also done by the destructor).
  void release() noexcept;
  // The lock files held (for tests and messages).
  std::vector<std::string> lock_paths() const;

 private:
  struct Held {
    std::string path;
    int fd;
  };
  void claim(const std::string& lock_path, const std::string& what, const std::string& holder);
  std::vector<Held> held_;
};

// A hidden directory (".NAME.kalm-tmp") that a checkpoint or export is written
// into before it is published; removed with whatever was written unless
// published() was called, so a failure (a full disk) leaves nothing half-made.
// Creating it first removes a partial one a killed run left.
class StagingDirectory {
 public:
  explicit StagingDirectory(std::string path);
  ~StagingDirectory();
  StagingDirectory(const StagingDirectory&) = delete;
  StagingDirectory& operator=(const StagingDirectory&) = delete;
  const std::string& path() const { return path_; }
  // Its contents were moved into place: nothing to remove.
  void published() { published_ = true; }

 private:
  std::string path_;
  bool published_ = false;
};

// Removes what killed runs left in `dir`: hidden staging directories and
// temporaries (".checkpoint-N.kalm-tmp", ".export.kalm-tmp",
// ".NAME.kalm-tmp.XXXXXX"). Call it only while holding OutputLock::directory(dir):
// then no live run owns them.
void remove_staging_leftovers(const std::string& dir);

// Moves every entry of the directory `staging` into `target` (both on one
// filesystem), replacing entries of the same name, then removes `staging`.
// The names in `markers` are what makes `target` look complete (config.json,
// kalm_training.json): old ones are removed first and the new ones moved in
// last, in the order given, so that a run interrupted in between leaves a
// directory that is visibly incomplete, never a mix of two exports that looks
// whole. Names matching `stale_prefixes` that the staging directory does not
// have (an older export's shards) are removed as well. Throws IoError.
void publish_staged(const std::string& staging, const std::string& target, const std::vector<std::string>& markers,
                    const std::vector<std::string>& stale_prefixes = {});

}  // namespace kalm::io
