#include "kalm/io/output_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <set>

#include "kalm/error.h"
#include "kalm/io/atomic_file.h"
#include "kalm/io/remove_tree.h"

namespace kalm::io {
namespace fs = std::filesystem;
namespace {

std::string holder_line(const std::string& tool) {
  char host[256] = "unknown";
  ::gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = '\0';
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &utc);
  return "pid " + std::to_string(::getpid()) + " on host " + host + ", " + tool + " started " + when;
}

std::string read_holder(int fd) {
  std::string text(512, '\0');
  ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text.empty() ? "a process that has not yet written its name" : text;
}

// ".NAME.kalm.lock" beside the file NAME.
std::string lock_beside(const std::string& path) {
  const fs::path p(path);
  return (p.parent_path() / ("." + p.filename().string() + ".kalm.lock")).string();
}

bool no_lock_support(int err) { return err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS; }

}  // namespace

OutputLock OutputLock::directory(const std::string& dir, const std::string& tool) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(dir + ": cannot create directory: " + ec.message());
  OutputLock lock;
  lock.claim((fs::path(dir) / ".kalm.lock").string(), dir, holder_line(tool));
  return lock;
}

OutputLock OutputLock::files(const std::vector<std::string>& paths, const std::string& tool) {
  OutputLock lock;
  const std::string holder = holder_line(tool);
  std::set<std::string> seen;
  for (const auto& path : paths) {
    if (path.empty() || writes_in_place(path)) continue;
    if (!seen.insert(path).second) continue;
    lock.claim(lock_beside(path), path, holder);  // on failure `lock` releases what it took
  }
  return lock;
}

void OutputLock::claim(const std::string& lock_path, const std::string& what, const std::string& holder) {
  // The previous holder removes its lock file on release: a file opened just
  // before that removal is locked but no longer the one on disk, so retry.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      throw IoError(what + ": cannot create the lock file " + lock_path + ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (no_lock_support(err)) {
        ::close(fd);
        ::unlink(lock_path.c_str());
        std::cerr << "warning: " << what << ": the filesystem does not support file locks (" << std::strerror(err)
                  << "); a concurrent run writing the same output would not be detected\n";
        return;
      }
      const std::string other = read_holder(fd);
      ::close(fd);
      if (err == EWOULDBLOCK)
        throw IoError(what + ": another run is writing this output (" + other +
                      "); wait for it to finish or choose another output");
      throw IoError(what + ": cannot lock " + lock_path + ": " + std::strerror(err));
    }
    struct stat open_st {}, disk_st {};
    if (::fstat(fd, &open_st) == 0 && ::stat(lock_path.c_str(), &disk_st) == 0 &&
        open_st.st_dev == disk_st.st_dev && open_st.st_ino == disk_st.st_ino) {
      const std::string line = holder + "\n";
      if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size())) {
        const int err = errno;
        ::close(fd);
        throw IoError(what + ": cannot write the lock file " + lock_path + ": " + std::strerror(err));
      }
      held_.push_back({lock_path, fd});
      return;
    }
    ::close(fd);
  }
  throw IoError(what + ": cannot take the lock " + lock_path + " (it keeps being replaced)");
}

OutputLock::OutputLock(OutputLock&& other) noexcept : held_(std::move(other.held_)) { other.held_.clear(); }

OutputLock& OutputLock::operator=(OutputLock&& other) noexcept {
  if (this != &other) {
    release();
    held_ = std::move(other.held_);
    other.held_.clear();
  }
  return *this;
}

OutputLock::~OutputLock() { release(); }

void OutputLock::release() noexcept {
  // Unlink while still holding the lock: whoever opened the old file retries.
  for (auto it = held_.rbegin(); it != held_.rend(); ++it) {
    ::unlink(it->path.c_str());
    ::close(it->fd);
  }
  held_.clear();
}

std::vector<std::string> OutputLock::lock_paths() const {
  std::vector<std::string> out;
  for (const auto& h : held_) out.push_back(h.path);
  return out;
}

StagingDirectory::StagingDirectory(std::string path) : path_(std::move(path)) {
  remove_tree(path_);
  std::error_code ec;
  fs::create_directories(path_, ec);
  if (ec) throw IoError(path_ + ": cannot create directory: " + ec.message());
}

StagingDirectory::~StagingDirectory() {
  if (!published_) remove_tree_nothrow(path_);
}

void remove_staging_leftovers(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> leftovers;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() > 1 && name[0] == '.' && name.find(".kalm-tmp") != std::string::npos)
      leftovers.push_back(it->path());
  }
  for (const auto& p : leftovers) remove_tree(p.string());
}

void publish_staged(const std::string& staging, const std::string& target, const std::vector<std::string>& markers,
                    const std::vector<std::string>& stale_prefixes) {
  std::error_code ec;
  std::set<std::string> staged;
  for (fs::directory_iterator it(staging, ec), end; !ec && it != end; it.increment(ec))
    staged.insert(it->path().filename().string());
  if (ec) throw IoError(staging + ": cannot list the staged export: " + ec.message());
  const std::set<std::string> marker_set(markers.begin(), markers.end());

  // 1. The old markers go first: from here on `target` no longer looks complete.
  for (const auto& name : markers) remove_tree((fs::path(target) / name).string());
  // 2. An older export's files that this one does not replace (other shard names).
  if (!stale_prefixes.empty()) {
    std::vector<fs::path> stale;
    for (fs::directory_iterator it(target, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (staged.count(name) || !it->is_regular_file()) continue;
      for (const auto& prefix : stale_prefixes)
        if (name.rfind(prefix, 0) == 0) stale.push_back(it->path());
    }
    for (const auto& p : stale) remove_tree(p.string());
  }
  // 3. Everything else, then 4. the markers, in order.
  auto move_in = [&](const std::string& name) {
    const fs::path from = fs::path(staging) / name, to = fs::path(target) / name;
    if (fs::is_directory(to, ec) && !fs::is_symlink(to, ec)) remove_tree(to.string());
    fs::rename(from, to, ec);
    if (ec) throw IoError(to.string() + ": cannot move the export into place: " + ec.message());
  };
  for (const auto& name : staged)
    if (!marker_set.count(name)) move_in(name);
  for (const auto& name : markers)
    if (staged.count(name)) move_in(name);
  remove_tree(staging);
}

}  // namespace kalm::io
