// kalm::core::install_host_block_cache: large CPU blocks freed by LibTorch are
// handed out again (same memory, no page faults), small ones and oversized ones
// go to LibTorch's allocator, the kept bytes stay under the capacity.
#include <doctest/doctest.h>

#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "kalm/core/host_allocator.h"

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

// One cache per process: this binary's, with a small capacity so that the
// test can fill it.
void ensure_installed() {
  static const bool installed = [] {
    kalm::core::HostBlockCacheOptions o;
    o.min_block = kMiB;
    o.max_block = 16 * kMiB;
    o.capacity = 8 * kMiB;
    return kalm::core::install_host_block_cache(o);
  }();
  DOCTEST_REQUIRE(installed);
  DOCTEST_REQUIRE(kalm::core::host_block_cache_installed());
}

torch::Tensor floats(std::size_t bytes) { return torch::empty({static_cast<std::int64_t>(bytes / 4)}); }

}  // namespace

DOCTEST_TEST_CASE("host block cache: a freed large block is handed out again, dirty memory and all") {
  ensure_installed();
  DOCTEST_CHECK_FALSE(kalm::core::install_host_block_cache());  // once per process
  const auto before = kalm::core::host_block_cache_stats();
  const void* first = nullptr;
  {
    torch::Tensor t = floats(4 * kMiB);
    first = t.data_ptr();
    DOCTEST_CHECK(reinterpret_cast<std::uintptr_t>(first) % 64 == 0);
    t.fill_(7.0f);
  }
  auto s = kalm::core::host_block_cache_stats();
  DOCTEST_CHECK(s.misses == before.misses + 1);
  DOCTEST_CHECK(s.cached_bytes == before.cached_bytes + 4 * kMiB);
  {
    // 3.5 MiB fits the kept 4 MiB block (at most a quarter wasted): the same memory.
    torch::Tensor z = torch::zeros({static_cast<std::int64_t>(7 * kMiB / 8)});
    DOCTEST_CHECK(z.data_ptr() == first);
    DOCTEST_CHECK(z.eq(0).all().item<bool>());  // zeros() still zeroes a reused block
    s = kalm::core::host_block_cache_stats();
    DOCTEST_CHECK(s.hits == before.hits + 1);
    DOCTEST_CHECK(s.cached_bytes == before.cached_bytes);
    // 2 MiB would waste half of it: a new block.
    torch::Tensor small = floats(2 * kMiB);
    DOCTEST_CHECK(small.data_ptr() != first);
    DOCTEST_CHECK(kalm::core::host_block_cache_stats().misses == before.misses + 2);
  }
  // Below min_block and above max_block: LibTorch's allocator, not counted.
  s = kalm::core::host_block_cache_stats();
  { torch::Tensor tiny = floats(64 * 1024), huge = floats(32 * kMiB); }
  const auto after = kalm::core::host_block_cache_stats();
  DOCTEST_CHECK(after.hits == s.hits);
  DOCTEST_CHECK(after.misses == s.misses);
  DOCTEST_CHECK(after.cached_bytes == s.cached_bytes);
}

DOCTEST_TEST_CASE("host block cache: the capacity bounds what is kept; raw allocations; threads") {
  ensure_installed();
  {
    // Five 3 MiB blocks freed together: two fit the 8 MiB capacity beside
    // whatever is kept, the rest go back to the system.
    std::vector<torch::Tensor> blocks;
    for (int i = 0; i < 5; ++i) blocks.push_back(floats(3 * kMiB + 4096 * i));
  }
  auto s = kalm::core::host_block_cache_stats();
  DOCTEST_CHECK(s.cached_bytes <= 8 * kMiB);
  DOCTEST_CHECK(s.returned >= 3);

  // raw_allocate / raw_deallocate, large and small.
  c10::Allocator* cpu = c10::GetCPUAllocator();
  for (std::size_t bytes : {std::size_t{100}, 2 * kMiB}) {
    void* p = cpu->raw_allocate(bytes);
    DOCTEST_REQUIRE(p != nullptr);
    static_cast<char*>(p)[bytes - 1] = 1;
    cpu->raw_deallocate(p);
  }

  // Two threads allocating and freeing at once: no block handed out twice
  // (each writes its own tag and reads it back), the kept bytes bounded.
  std::vector<std::thread> threads;
  std::vector<int> bad(2, 0);
  for (int id = 0; id < 2; ++id)
    threads.emplace_back([id, &bad] {
      for (int i = 0; i < 200; ++i) {
        torch::Tensor a = torch::full({static_cast<std::int64_t>((1 + i % 3) * kMiB / 4)}, float(id * 1000 + i));
        torch::Tensor b = torch::full({static_cast<std::int64_t>(2 * kMiB / 4)}, float(id));
        if (a[-1].item<float>() != float(id * 1000 + i) || b[0].item<float>() != float(id)) ++bad[id];
      }
    });
  for (auto& t : threads) t.join();
  DOCTEST_CHECK(bad[0] == 0);
  DOCTEST_CHECK(bad[1] == 0);
  s = kalm::core::host_block_cache_stats();
  DOCTEST_CHECK(s.cached_bytes <= 8 * kMiB);
  DOCTEST_CHECK(s.hits > 100);
}
