#include "kalm/io/remove_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "kalm/error.h"

namespace kalm::io {
namespace {

struct Failure {
  std::string path;
  int err;
};

std::string join(const std::string& dir, const char* name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

// Removes what `name` (relative to the open directory `parent`, shown to users
// as `shown`) names. Directories are descended through file descriptors
// (O_NOFOLLOW), so a link swapped in for a directory is removed, not followed.
bool remove_at(int parent, const char* name, const std::string& shown, std::size_t& count, Failure& fail) {
  struct stat st{};
  if (::fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return true;
    fail = {shown, errno};
    return false;
  }
  if (S_ISDIR(st.st_mode)) {
    const int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      fail = {shown, errno};
      return false;
    }
    DIR* dir = ::fdopendir(fd);
    if (!dir) {
      fail = {shown, errno};
      ::close(fd);
      return false;
    }
    // Names first, removal after: unlinking while readdir() walks the same
    // directory may skip entries.
    std::vector<std::string> names;
    errno = 0;
    while (const dirent* e = ::readdir(dir)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
      errno = 0;
    }
    const int read_err = errno;
    bool ok = read_err == 0;
    if (!ok) fail = {shown, read_err};
    for (const auto& child : names) {
      if (!ok) break;
      ok = remove_at(::dirfd(dir), child.c_str(), join(shown, child.c_str()), count, fail);
    }
    ::closedir(dir);
    if (!ok) return false;
    if (::unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
      fail = {shown, errno};
      return false;
    }
  } else if (::unlinkat(parent, name, 0) != 0 && errno != ENOENT) {
    fail = {shown, errno};
    return false;
  }
  ++count;
  return true;
}

bool remove_path(const std::string& path, std::size_t& count, Failure& fail) {
  if (path.empty()) {
    fail = {"(empty path)", EINVAL};
    return false;
  }
  return remove_at(AT_FDCWD, path.c_str(), path, count, fail);
}

}  // namespace

std::size_t remove_tree(const std::string& path) {
  std::size_t count = 0;
  Failure fail;
  if (!remove_path(path, count, fail))
    throw IoError(fail.path + ": cannot remove: " + std::strerror(fail.err));
  return count;
}

bool remove_tree_nothrow(const std::string& path, std::string* why) noexcept {
  try {
    std::size_t count = 0;
    Failure fail;
    if (remove_path(path, count, fail)) return true;
    if (why) *why = fail.path + ": " + std::strerror(fail.err);
  } catch (...) {  // std::bad_alloc from a path string
    if (why) *why = path + ": out of memory";
  }
  return false;
}

}  // namespace kalm::io
