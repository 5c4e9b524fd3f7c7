#include "cblas.h"

#include <dlfcn.h>

#include <mutex>
#include <vector>

namespace kalm::search::detail {
namespace {

struct Loaded {
  Cblas library;
  bool ok = false;
  std::string why;
};

Loaded load(CblasLibrary which) {
  // Debian's OpenMP builds first: their threads are libgomp's, as are those of
  // kalm's own OpenMP loops between the products; a pthread build's threads
  // spin against those loops (~3% of a search, bench/README.md). Then whichever
  // build the system's alternatives (or the loader's path) provide.
  std::vector<std::string> names;
  const bool blis = which == CblasLibrary::Blis;
#ifdef KALM_SYSTEM_LIBDIR
  names.push_back(blis ? KALM_SYSTEM_LIBDIR "/blis-openmp/libblis.so.4"
                       : KALM_SYSTEM_LIBDIR "/openblas-openmp/libopenblas.so.0");
#endif
  names.push_back(blis ? "libblis.so.4" : "libopenblas.so.0");
  Loaded out;
  for (const auto& name : names) {
    // RTLD_LOCAL keeps the library's BLAS symbols away from LibTorch;
    // RTLD_DEEPBIND makes it bind to its own symbols, not LibTorch's same-named
    // MKL ones.
    void* handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      out.why += (out.why.empty() ? "" : "; ") + std::string(::dlerror());
      continue;
    }
    Cblas lib;
    lib.sgemm = reinterpret_cast<Cblas::Sgemm>(::dlsym(handle, "cblas_sgemm"));
    if (blis)
      lib.bli_thread_set_num_threads =
          reinterpret_cast<void (*)(std::int64_t)>(::dlsym(handle, "bli_thread_set_num_threads"));
    else
      lib.openblas_set_num_threads = reinterpret_cast<void (*)(int)>(::dlsym(handle, "openblas_set_num_threads"));
    if (!lib.sgemm || (!lib.bli_thread_set_num_threads && !lib.openblas_set_num_threads)) {
      out.why += (out.why.empty() ? "" : "; ") + name + " lacks cblas_sgemm or its thread-count setter";
      ::dlclose(handle);
      continue;
    }
    lib.path = name;
    out.library = lib;
    out.ok = true;
    return out;
  }
  return out;
}

}  // namespace

void Cblas::set_threads(int threads) const {
  if (openblas_set_num_threads) openblas_set_num_threads(threads);
  if (bli_thread_set_num_threads) bli_thread_set_num_threads(threads);
}

const Cblas* cblas(CblasLibrary library, std::string* why) {
  static std::once_flag once[2];
  static Loaded loaded[2];
  const int i = library == CblasLibrary::Blis ? 0 : 1;
  std::call_once(once[i], [&] { loaded[i] = load(library); });
  if (!loaded[i].ok && why) *why = loaded[i].why;
  return loaded[i].ok ? &loaded[i].library : nullptr;
}

}  // namespace kalm::search::detail
