#include "kalm/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "kalm/error.h"

namespace kalm::io {
namespace {

// Fixed-size registry of pending temporaries, readable from a signal handler
// (no allocation there: the paths are copied into static buffers).
constexpr std::size_t kMaxPending = 64;
constexpr std::size_t kMaxPath = 4096;
struct PendingSlot {
  std::atomic<bool> used{false};
  char path[kMaxPath];
};
std::array<PendingSlot, kMaxPending> g_pending;
std::mutex g_pending_mutex;

int register_pending(const std::string& path) {
  if (path.size() + 1 > kMaxPath) return -1;
  std::lock_guard<std::mutex> lock(g_pending_mutex);
  for (std::size_t i = 0; i < kMaxPending; ++i) {
    if (!g_pending[i].used.load()) {
      std::memcpy(g_pending[i].path, path.c_str(), path.size() + 1);
      g_pending[i].used.store(true);
      return static_cast<int>(i);
    }
  }
  return -1;  // registry full: the file is still removed by the destructor
}

void unregister_pending(int slot) {
  if (slot < 0) return;
  std::lock_guard<std::mutex> lock(g_pending_mutex);
  g_pending[slot].used.store(false);
}

// The dispositions found before ours, restored before re-raising so that an
// earlier handler (a test framework's, a launcher's) still runs afterwards.
struct sigaction g_previous[NSIG];

extern "C" void cleanup_and_reraise(int sig) {
  for (auto& slot : g_pending)
    if (slot.used.load()) ::unlink(slot.path);
  ::sigaction(sig, &g_previous[sig], nullptr);
  ::raise(sig);  // delivered when this handler returns
}

std::mutex g_handlers_mutex;

}  // namespace

// Checked on every new output file rather than once, so a handler that someone
// installed or reset after us is chained again.
void install_temp_cleanup_handlers() {
  std::lock_guard<std::mutex> lock(g_handlers_mutex);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction current {};
    ::sigaction(sig, nullptr, &current);
    if (current.sa_handler == SIG_IGN) continue;  // an ignored signal kills nothing
    if (current.sa_handler == cleanup_and_reraise) continue;
    g_previous[sig] = current;
    struct sigaction action {};
    action.sa_handler = cleanup_and_reraise;
    sigemptyset(&action.sa_mask);
    ::sigaction(sig, &action, nullptr);
  }
}

bool is_stdio(const std::string& path) { return path.empty() || path == "-"; }

bool writes_in_place(const std::string& path) {
  if (is_stdio(path)) return true;
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
}

namespace {

// Where a write to `path` really lands: symbolic links followed (at most 40
// hops, the kernel's own limit), so that the temporary is staged beside the
// real file and the rename replaces that file, not the link. A dangling link
// resolves to the path it names, which the rename then creates.
std::string resolve_links(const std::string& path) {
  std::string current = path;
  for (int hops = 0; hops < 40; ++hops) {
    struct stat st {};
    if (::lstat(current.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return current;
    std::string target(static_cast<std::size_t>(st.st_size > 0 ? st.st_size : 255) + 1, '\0');
    ssize_t n = ::readlink(current.c_str(), target.data(), target.size());
    if (n < 0 || static_cast<std::size_t>(n) >= target.size()) return current;
    target.resize(static_cast<std::size_t>(n));
    if (target.empty()) return current;
    if (target[0] != '/') {
      auto slash = current.find_last_of('/');
      if (slash != std::string::npos) target = current.substr(0, slash + 1) + target;
    }
    current = std::move(target);
  }
  throw IoError(path + ": cannot create output file: too many levels of symbolic links");
}

// True when `st` is the file open on descriptor `fd` (e.g. /dev/stdout, or the
// file the shell redirected stdout to).
bool is_open_on(const struct stat& st, int fd) {
  struct stat fst {};
  return ::fstat(fd, &fst) == 0 && fst.st_dev == st.st_dev && fst.st_ino == st.st_ino;
}

}  // namespace

AtomicOutputFile::AtomicOutputFile(std::string path) : path_(std::move(path)) {
  if (is_stdio(path_)) {
    path_ = "-";
    file_ = stdout;
    return;
  }
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0) {
    if (is_open_on(st, STDOUT_FILENO) || is_open_on(st, STDERR_FILENO)) {
      file_ = is_open_on(st, STDOUT_FILENO) ? stdout : stderr;
      return;
    }
    if (S_ISDIR(st.st_mode)) throw IoError(path_ + ": cannot write output file: it is a directory");
    if (S_ISSOCK(st.st_mode)) throw IoError(path_ + ": cannot write output file: it is a socket");
    if (!S_ISREG(st.st_mode)) {
      open_direct(path_);
      return;
    }
  }
  install_temp_cleanup_handlers();
  std::string target = resolve_links(path_);
  std::string dir = ".", base = target;
  if (auto slash = target.find_last_of('/'); slash != std::string::npos) {
    dir = slash == 0 ? "/" : target.substr(0, slash);
    base = target.substr(slash + 1);
  }
  target_path_ = target;
  std::string tmpl = dir + "/." + base + ".kalm-tmp.XXXXXX";
  std::string buf = tmpl;
  int fd = ::mkstemp(buf.data());
  if (fd < 0)
    throw IoError(path_ + ": cannot create output file: " + std::strerror(errno));
  temp_path_ = buf;
  ::fchmod(fd, 0644);
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    ::close(fd);
    ::unlink(temp_path_.c_str());
    throw IoError(path_ + ": cannot open output file: " + std::strerror(errno));
  }
  owns_file_ = true;
  slot_ = register_pending(temp_path_);
}

// A device or FIFO: opened as the shell's ">" would (a FIFO waits for its
// reader), written in place.
void AtomicOutputFile::open_direct(const std::string& target) {
  int fd = ::open(target.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(path_ + ": cannot open output file: " + std::strerror(errno));
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    int err = errno;
    ::close(fd);
    throw IoError(path_ + ": cannot open output file: " + std::strerror(err));
  }
  owns_file_ = true;
}

AtomicOutputFile::~AtomicOutputFile() { abort(); }

void AtomicOutputFile::write(const void* data, std::size_t size) {
  if (!file_) throw IoError(path_ + ": write after close");
  if (size == 0) return;
  if (std::fwrite(data, 1, size, file_) != size)
    throw IoError(display_output() + ": write failed: " + std::strerror(errno));
}

void AtomicOutputFile::commit() {
  if (committed_) return;
  if (!file_) throw IoError(path_ + ": commit after abort");
  if (is_direct()) {
    // No fsync: devices and FIFOs refuse it, and stdout may be either.
    int err = std::fflush(file_) == 0 ? 0 : errno;
    if (owns_file_ && std::fclose(file_) != 0 && err == 0) err = errno;
    file_ = nullptr;
    committed_ = true;
    if (err != 0) throw IoError(display_output() + ": write failed: " + std::strerror(err));
    return;
  }
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  int err = errno;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok || ::rename(temp_path_.c_str(), target_path_.c_str()) != 0) {
    if (ok) err = errno;
    ::unlink(temp_path_.c_str());
    unregister_pending(slot_);
    throw IoError(path_ + ": cannot write output file: " + std::strerror(err));
  }
  unregister_pending(slot_);
  committed_ = true;
}

void AtomicOutputFile::abort() noexcept {
  if (committed_ || !file_) return;
  if (is_direct()) {
    if (owns_file_) std::fclose(file_); else std::fflush(file_);
    file_ = nullptr;
    return;
  }
  std::fclose(file_);
  file_ = nullptr;
  ::unlink(temp_path_.c_str());
  unregister_pending(slot_);
}

std::string AtomicOutputFile::display_output() const {
  return is_stdout() ? std::string("<stdout>") : path_;
}

}  // namespace kalm::io
