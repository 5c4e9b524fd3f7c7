#include "kalm/cli/progress.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>

namespace kalm::cli {

std::string format_seconds(double s) {
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%d min %02d s", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%d h %02d min", static_cast<int>(s) / 3600,
                  (static_cast<int>(s) % 3600) / 60);
  }
  return buf;
}

std::string format_rate(double r) {
  char buf[64];
  if (r >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", r / 1e6);
  else if (r >= 1e4) std::snprintf(buf, sizeof buf, "%.1fk", r / 1e3);
  else std::snprintf(buf, sizeof buf, "%.1f", r);
  return buf;
}

Progress::Progress(std::string tool, std::string unit, std::optional<std::uint64_t> total, bool quiet)
    : tool_(std::move(tool)), unit_(std::move(unit)), total_(total), quiet_(quiet),
      interactive_(!quiet && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() {
  if (interactive_ && !finished_) std::fputs("\n", stderr);
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::advance(std::uint64_t n) {
  count_.fetch_add(n);
  if (!interactive_) return;
  auto now = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void Progress::draw(bool final_draw) {
  const std::uint64_t done = count_.load();
  const double secs = elapsed_seconds();
  const double rate = secs > 0 ? done / secs : 0.0;
  std::ostringstream os;
  os << '\r' << tool_ << ' ';
  if (total_ && *total_ > 0) {
    const int width = 30;
    double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(*total_));
    int filled = static_cast<int>(frac * width);
    os << '[' << std::string(filled, '#') << std::string(width - filled, ' ') << "] ";
    char pct[16];
    std::snprintf(pct, sizeof pct, "%3d%% ", static_cast<int>(frac * 100));
    os << pct << done << '/' << *total_ << ' ' << unit_;
    if (!final_draw && rate > 0 && done < *total_)
      os << ", ETA " << format_seconds((*total_ - done) / rate);
  } else {
    os << done << ' ' << unit_;
  }
  os << ", " << format_rate(rate) << ' ' << unit_ << "/s\x1b[K";
  std::fputs(os.str().c_str(), stderr);
  std::fflush(stderr);
}

void Progress::finish(const std::string& summary) {
  if (finished_) return;
  finished_ = true;
  if (interactive_) {
    std::lock_guard<std::mutex> lock(mutex_);
    draw(true);
    std::fputs("\n", stderr);
  }
  if (!quiet_) std::fprintf(stderr, "%s: %s\n", tool_.c_str(), summary.c_str());
}

}  // namespace kalm::cli
