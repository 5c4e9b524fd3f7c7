#include "kalm/core/host_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>

namespace kalm::core {

namespace {

class HostBlockCache final : public c10::Allocator {
 public:
  HostBlockCache(c10::Allocator* fallback, const HostBlockCacheOptions& options)
      : fallback_(fallback), options_(options) {}

  c10::DataPtr allocate(std::size_t nbytes) override {
    if (nbytes < options_.min_block || nbytes > options_.max_block) return fallback_->allocate(nbytes);
    void* block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The smallest kept block that holds the request, if it wastes at most
      // a quarter of itself.
      auto it = free_.lower_bound(nbytes);
      if (it != free_.end() && nbytes >= it->first - it->first / 4) {
        block = it->second;
        live_.emplace(block, it->first);
        stats_.cached_bytes -= it->first;
        free_.erase(it);
        ++stats_.hits;
      } else {
        ++stats_.misses;
      }
    }
    if (!block) {
      block = c10::alloc_cpu(nbytes);  // 64-byte aligned; throws on failure
      std::lock_guard<std::mutex> lock(mutex_);
      live_.emplace(block, nbytes);
    }
    return {block, block, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  HostBlockCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  // The deleter of every block this allocator hands out, and its raw
  // deleter: a pointer it does not know came from the fallback (alloc_cpu).
  static void release(void* ptr) {
    HostBlockCache* self = instance.load(std::memory_order_acquire);
    if (self && self->keep(ptr)) return;
    c10::free_cpu(ptr);
  }

  static std::atomic<HostBlockCache*> instance;

 private:
  // True when ptr is one of this cache's blocks and is now kept; false when
  // the caller frees it.
  bool keep(void* ptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(ptr);
    if (it == live_.end()) return false;
    const std::size_t size = it->second;
    live_.erase(it);
    if (stats_.cached_bytes + size > options_.capacity) {
      ++stats_.returned;
      return false;
    }
    free_.emplace(size, ptr);
    stats_.cached_bytes += size;
    return true;
  }

  c10::Allocator* fallback_;
  HostBlockCacheOptions options_;
  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;       // kept blocks by size
  std::unordered_map<void*, std::size_t> live_;  // handed-out blocks and their sizes
  HostBlockCacheStats stats_;
};

std::atomic<HostBlockCache*> HostBlockCache::instance{nullptr};

std::size_t physical_memory() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) : 0;
}

}  // namespace

bool install_host_block_cache(const HostBlockCacheOptions& options) {
  static std::mutex install_mutex;
  std::lock_guard<std::mutex> lock(install_mutex);
  if (HostBlockCache::instance.load()) return false;
  HostBlockCacheOptions o = options;
  if (const std::size_t ram = physical_memory(); ram > 0) o.capacity = std::min(o.capacity, ram / 8);
  // Never destroyed: tensors freed during static destruction still find it.
  auto* cache = new HostBlockCache(c10::GetDefaultCPUAllocator(), o);
  HostBlockCache::instance.store(cache, std::memory_order_release);
  // Above the default CPU allocator's priority (0), so that a later default
  // registration does not replace it.
  c10::SetCPUAllocator(cache, /*priority=*/1);
  return true;
}

bool host_block_cache_installed() { return HostBlockCache::instance.load() != nullptr; }

HostBlockCacheStats host_block_cache_stats() {
  HostBlockCache* cache = HostBlockCache::instance.load();
  return cache ? cache->stats() : HostBlockCacheStats{};
}

}  // namespace kalm::core
