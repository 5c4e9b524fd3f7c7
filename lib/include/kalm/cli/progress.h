#pragma once
// Progress reporting on stderr (conventions.md): a redrawn bar when stderr is a
// terminal, nothing while running otherwise, and one summary line at the end
// unless --quiet. Thread-safe: advance() may be called from worker threads.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

namespace kalm::cli {

class Progress {
 public:
  // tool: prefix of the summary line; unit: what is counted ("texts", "steps").
  // total: known amount of work, if any (shows a percentage and an ETA).
  Progress(std::string tool, std::string unit, std::optional<std::uint64_t> total, bool quiet);
  ~Progress();

  void advance(std::uint64_t n = 1);
  // Ends the bar and prints "<tool>: <summary>" (unless quiet).
  void finish(const std::string& summary);

  double elapsed_seconds() const;
  std::uint64_t count() const { return count_.load(); }
  bool interactive() const { return interactive_; }

 private:
  void draw(bool final_draw);

  std::string tool_, unit_;
  std::optional<std::uint64_t> total_;
  bool quiet_;
  bool interactive_;
  bool finished_ = false;
  std::atomic<std::uint64_t> count_{0};
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  std::mutex mutex_;
};

// "12.3 s", "4 min 05 s"; and a rate with SI suffixes ("12.3k"; the caller
// appends the unit, e.g. " texts/s").
std::string format_seconds(double seconds);
std::string format_rate(double per_second);

}  // namespace kalm::cli
