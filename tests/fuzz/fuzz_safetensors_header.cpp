// libFuzzer target: a whole safetensors file (kalm/io/safetensors.h).
//
// The input is the file: the u64 header length, the JSON header, the data
// section. SafetensorsFile only opens paths (it memory-maps them), so the bytes
// go into an anonymous memory file (memfd_create) and are opened
// as /proc/self/fd/N: the mmap path the tools take, and nothing on disk.
//
// Checks beyond "no crash": every tensor a valid file lists lies inside the
// data section (its bytes are read, so ASan sees any overrun of the mapping's
// bookkeeping) with numel x dtype size == nbytes; and a file kalm accepts,
// queued into SafetensorsWriter, gives a header that SafetensorsFile reads back
// to the same names, dtypes, shapes and metadata.
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "kalm/io/safetensors.h"

namespace {

using kalm::io::SafetensorsFile;
using kalm::io::SafetensorsWriter;
using kalm::io::TensorInfo;

// The memory file's path, its contents replaced on every call.
class MemoryFile {
 public:
  MemoryFile() {
    fd_ = ::memfd_create("kalm-fuzz.safetensors", 0);
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& write(const void* data, std::size_t size) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    const char* p = static_cast<const char*>(data);
    std::size_t done = 0;
    while (done < size) {
      ssize_t n = ::pwrite(fd_, p + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<std::size_t>(n);
    }
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// Two: the rewritten header must not replace the bytes that the file under
// test still maps (a mapped page past a shrunken file's end raises SIGBUS).
MemoryFile& memory_file(int which) {
  static MemoryFile files[2];
  return files[which];
}

void check_layout(const SafetensorsFile& f) {
  const std::uint8_t* base = f.mapped_file()->data();
  const std::size_t size = f.mapped_file()->size();
  unsigned sum = 0;
  for (const TensorInfo& t : f.tensors()) {
    KALM_FUZZ_CHECK(t.begin <= t.end && t.end <= f.data_size(), t.name);
    std::uint64_t numel = 1;
    for (std::int64_t d : t.shape) {
      KALM_FUZZ_CHECK(d >= 0, t.name);
      numel *= static_cast<std::uint64_t>(d);
    }
    if (t.nbytes() > 0) {
      KALM_FUZZ_CHECK(numel * kalm::io::dtype_size(t.dtype) == t.nbytes(), t.name);
      KALM_FUZZ_CHECK(t.numel() == static_cast<std::int64_t>(numel), t.name);
    }
    const std::uint8_t* p = f.data(t);
    KALM_FUZZ_CHECK(p >= base && p + t.nbytes() <= base + size, t.name);
    if (t.nbytes() > 0) sum += p[0] + p[t.nbytes() - 1];
    KALM_FUZZ_CHECK(f.find(t.name) == &t, t.name);
  }
  (void)sum;
}

// Queues every tensor of `f` into a writer; its header, read back, must list
// the same tensors. A tensor the writer refuses (a kalm::Error) ends the check:
// the reader follows the reference implementation, the writer kalm's rules.
void check_rewrite(const SafetensorsFile& f) {
  SafetensorsWriter writer;
  std::string header;
  bool ok = kalm_fuzz::expect_kalm_errors([&] {
    for (const TensorInfo& t : f.tensors()) writer.add(t.name, t.dtype, t.shape, f.data(t), t.nbytes());
    writer.set_metadata(f.metadata());
    header = writer.header();
  });
  if (!ok) return;
  KALM_FUZZ_CHECK(writer.file_size() == 8 + header.size() + writer.data_size(), "writer sizes");
  std::string bytes(8, '\0');
  std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header;
  bytes.append(static_cast<std::size_t>(writer.data_size()), '\0');
  try {
    SafetensorsFile again = SafetensorsFile::open(memory_file(1).write(bytes.data(), bytes.size()));
    KALM_FUZZ_CHECK(again.tensors().size() == f.tensors().size(), "tensor count");
    for (std::size_t i = 0; i < f.tensors().size(); ++i) {
      const TensorInfo& a = f.tensors()[i];
      const TensorInfo& b = again.tensors()[i];
      KALM_FUZZ_CHECK(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.nbytes() == b.nbytes(),
                      a.name);
    }
    KALM_FUZZ_CHECK(again.metadata() == f.metadata(), "metadata");
  } catch (const kalm::Error& e) {
    kalm_fuzz::finding(std::string("a header SafetensorsWriter made does not read back: ") + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = memory_file(0).write(data, size);
  kalm_fuzz::expect_kalm_errors([&] {
    SafetensorsFile f = SafetensorsFile::open(path);
    check_layout(f);
    for (const auto& [key, value] : f.metadata()) KALM_FUZZ_CHECK(f.metadata_value(key) == value, key);
    check_rewrite(f);
  });
  return 0;
}
