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

AtomicOutputFile::AtomicOutputFile(std::string path) : path_(std::move(path)) {
  if (is_stdio(path_)) {
    path_ = "-";
    file_ = stdout;
    return;
  }
  install_temp_cleanup_handlers();
  std::string dir = ".", base = path_;
  if (auto slash = path_.find_last_of('/'); slash != std::string::npos) {
    dir = slash == 0 ? "/" : path_.substr(0, slash);
    base = path_.substr(slash + 1);
  }
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
  slot_ = register_pending(temp_path_);
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
  if (is_stdout()) {
    if (std::fflush(file_) != 0)
      throw IoError("<stdout>: write failed: " + std::string(std::strerror(errno)));
    committed_ = true;
    file_ = nullptr;
    return;
  }
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  int err = errno;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok || ::rename(temp_path_.c_str(), path_.c_str()) != 0) {
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
  if (is_stdout()) {
    std::fflush(file_);
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
