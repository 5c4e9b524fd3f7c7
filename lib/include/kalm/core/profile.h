#pragma once
// --profile: LibTorch's profiler (Kineto) over a window of a run's units
// (kalm-train's optimiser steps, kalm-embed's batches), written as a Chrome
// trace (JSON: Perfetto's ui.perfetto.dev, chrome://tracing, TensorBoard's
// profiler plugin). It holds the LibTorch operators of the thread that drives
// the model, with input shapes, kalm's own scopes (kalm::fused_*), one
// ProfilerStep#N span per unit, and on a GPU every CUDA kernel and copy (by
// CUPTI) on the device's timeline. It is the way to see where a GPU's time
// goes on machines without Nsight Systems.
//
// The window is 1-based and inclusive; units before it warm up (allocator
// growth, kernel selection, the first steps' one-off costs). The recording
// stops after the last unit's work has finished on the device, so a trace
// shows complete kernels. Kineto itself prints a line on stderr when it
// starts and one when it stops.

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace kalm::core {

struct ProfileRange {
  std::int64_t first = 0;  // 0: no profile
  std::int64_t last = 0;
};

// "A:B" (units A to B) or "A" (unit A alone), 1 <= A <= B. A UsageError
// naming `flag` otherwise.
ProfileRange parse_profile_range(const std::string& text, const std::string& flag);

// `path` with ".rankN" before a ".json" ending (after it otherwise), for
// data-parallel runs where every rank writes its own trace.
std::string profile_path_for_rank(const std::string& path, std::int64_t rank);

class ProfileWindow {
 public:
  // Opens the output at once (an unwritable place fails before the run, as an
  // IoError naming it); nothing is recorded until begin(range.first).
  ProfileWindow(std::string path, ProfileRange range, const torch::Device& device);
  ~ProfileWindow();  // a recording still running is stopped and thrown away
  ProfileWindow(const ProfileWindow&) = delete;
  ProfileWindow& operator=(const ProfileWindow&) = delete;

  // Call as unit `unit` starts and after its work has been queued. end() of
  // the window's last unit waits for the device, stops the recording and
  // writes the trace.
  void begin(std::int64_t unit);
  void end(std::int64_t unit);
  // The run ended: a recording still running (the window reached past the
  // run's last unit) is stopped and written as it is. Returns whether a trace
  // was written, by this call or by end().
  bool finish();

  bool recording() const { return recording_; }
  bool written() const { return written_; }
  const std::string& path() const { return path_; }
  const ProfileRange& range() const { return range_; }
  // Units recorded so far (for the run's summary).
  std::int64_t units_recorded() const { return units_recorded_; }

 private:
  void stop_and_write();

  std::string path_;
  ProfileRange range_;
  torch::Device device_;
  struct Output;
  std::unique_ptr<Output> output_;
  struct StepScope;
  std::unique_ptr<StepScope> step_scope_;
  bool recording_ = false;
  bool written_ = false;
  std::int64_t units_recorded_ = 0;
};

}  // namespace kalm::core
