#include "spm_library.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "kalm/error.h"

#ifndef KALM_SPM_BUILD_PATH
#define KALM_SPM_BUILD_PATH ""
#endif
#ifndef KALM_INSTALL_LIBDIR
#define KALM_INSTALL_LIBDIR "lib"
#endif

namespace kalm::text::detail {
namespace {

std::string executable_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<std::size_t>(n));
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

SpmLibrary open_library() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("KALM_SPM_LIBRARY"); env && *env) candidates.push_back(env);
  const std::string exe = executable_dir();
  candidates.push_back(exe + "/../lib/libkalm_spm.so");
  candidates.push_back(exe + "/../lib/kalm/libkalm_spm.so");
  candidates.push_back(exe + "/../" KALM_INSTALL_LIBDIR "/kalm/libkalm_spm.so");
  if (*KALM_SPM_BUILD_PATH) candidates.push_back(KALM_SPM_BUILD_PATH);

  std::string tried;
  void* handle = nullptr;
  for (const auto& path : candidates) {
    if (::access(path.c_str(), R_OK) != 0) {
      tried += "\n  " + path + " (not found)";
      continue;
    }
    // RTLD_LOCAL keeps sentencepiece's bundled protobuf out of the global scope;
    // RTLD_DEEPBIND makes sentencepiece bind to that copy, not LibTorch's.
    // The sanitized test build (torch-free, so no second protobuf) leaves it
    // out: AddressSanitizer refuses RTLD_DEEPBIND.
#ifdef KALM_SANITIZED_BUILD
    constexpr int kBind = 0;
#else
    constexpr int kBind = RTLD_DEEPBIND;
#endif
    handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | kBind);
    if (handle) break;
    tried += "\n  " + path + " (" + ::dlerror() + ")";
  }
  if (!handle) throw ModelError("cannot load libkalm_spm.so, needed for SentencePiece models; tried:" + tried);

  auto sym = [&](const char* name) {
    void* p = ::dlsym(handle, name);
    if (!p) throw ModelError(std::string("libkalm_spm.so lacks ") + name + "; rebuild kalm");
    return p;
  };
  auto version = reinterpret_cast<decltype(&kalm_spm_abi_version)>(sym("kalm_spm_abi_version"));
  if (version() != KALM_SPM_ABI_VERSION) throw ModelError("libkalm_spm.so is from another kalm build; rebuild kalm");
  SpmLibrary lib{};
  lib.load = reinterpret_cast<decltype(lib.load)>(sym("kalm_spm_load"));
  lib.free = reinterpret_cast<decltype(lib.free)>(sym("kalm_spm_free"));
  lib.free_buffer = reinterpret_cast<decltype(lib.free_buffer)>(sym("kalm_spm_free_buffer"));
  lib.encode = reinterpret_cast<decltype(lib.encode)>(sym("kalm_spm_encode"));
  lib.decode = reinterpret_cast<decltype(lib.decode)>(sym("kalm_spm_decode"));
  lib.piece_size = reinterpret_cast<decltype(lib.piece_size)>(sym("kalm_spm_piece_size"));
  lib.piece_to_id = reinterpret_cast<decltype(lib.piece_to_id)>(sym("kalm_spm_piece_to_id"));
  lib.id_to_piece = reinterpret_cast<decltype(lib.id_to_piece)>(sym("kalm_spm_id_to_piece"));
  lib.is_control = reinterpret_cast<decltype(lib.is_control)>(sym("kalm_spm_is_control"));
  lib.special_ids = reinterpret_cast<decltype(lib.special_ids)>(sym("kalm_spm_special_ids"));
  lib.train = reinterpret_cast<decltype(lib.train)>(sym("kalm_spm_train"));
  return lib;
}

}  // namespace

const SpmLibrary& spm_library() {
  static std::once_flag once;
  static SpmLibrary library;
  static std::exception_ptr failure;
  std::call_once(once, [] {
    try {
      library = open_library();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  if (failure) std::rethrow_exception(failure);
  return library;
}

}  // namespace kalm::text::detail
