#include "kalm/core/profile.h"

#include "kalm/error.h"
#include "kalm/io/atomic_file.h"
#include "kalm/io/remove_tree.h"

#include <ATen/record_function.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

namespace kalm::core {

namespace fs = std::filesystem;
namespace profiler = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

ProfileRange parse_profile_range(const std::string& text, const std::string& flag) {
  const auto bad = [&] {
    return UsageError(flag + " " + text + ": expected FIRST:LAST or FIRST, 1 <= FIRST <= LAST (1-based, inclusive)");
  };
  const auto number = [&](const std::string& part) -> std::int64_t {
    if (part.empty() || part.size() > 12 || part.find_first_not_of("0123456789") != std::string::npos) throw bad();
    return std::stoll(part);
  };
  ProfileRange range;
  const auto colon = text.find(':');
  if (colon == std::string::npos) {
    range.first = range.last = number(text);
  } else {
    range.first = number(text.substr(0, colon));
    range.last = number(text.substr(colon + 1));
  }
  if (range.first < 1 || range.last < range.first) throw bad();
  return range;
}

std::string profile_path_for_rank(const std::string& path, std::int64_t rank) {
  const std::string tag = ".rank" + std::to_string(rank);
  const std::string json = ".json";
  if (path.size() > json.size() && path.compare(path.size() - json.size(), json.size(), json) == 0)
    return path.substr(0, path.size() - json.size()) + tag + json;
  return path + tag;
}

struct ProfileWindow::Output {
  explicit Output(const std::string& path) : file(path) {}
  io::AtomicOutputFile file;
};

// One ProfilerStep#N span per unit, as torch.profiler's schedule marks its
// steps (TensorBoard's plugin splits a trace by them).
struct ProfileWindow::StepScope {
  explicit StepScope(std::int64_t unit)
      : name("ProfilerStep#" + std::to_string(unit)), record(at::RecordScope::USER_SCOPE) {
    if (record.isActive()) record.before(std::string_view(name), c10::ArrayRef<const c10::IValue>{});
  }
  const std::string name;  // outlives the record, which may hold a view of it
  at::RecordFunction record;
};

namespace {

std::set<ActivityType> activities_for(const torch::Device& device) {
  std::set<ActivityType> activities{ActivityType::CPU};
  if (device.is_cuda()) activities.insert(ActivityType::CUDA);
  return activities;
}

ProfilerConfig profiler_config() {
  return ProfilerConfig(ProfilerState::KINETO, /*report_input_shapes=*/true, /*profile_memory=*/false,
                        /*with_stack=*/false);
}

// Waits for the work queued on the device's current stream (a no-op on the CPU).
void wait_for_device(const torch::Device& device) {
  if (device.is_cpu()) return;
  c10::impl::VirtualGuardImpl guard(device.type());
  guard.getStream(device).synchronize();
}

}  // namespace

ProfileWindow::ProfileWindow(std::string path, ProfileRange range, const torch::Device& device)
    : path_(std::move(path)), range_(range), device_(device) {
  if (range_.first < 1 || range_.last < range_.first)
    throw InternalError("ProfileWindow: a window of units " + std::to_string(range_.first) + ".." +
                        std::to_string(range_.last));
  if (path_ == "-" || path_.empty()) throw UsageError("--profile needs a file name (the trace is not written to stdout)");
  output_ = std::make_unique<Output>(path_);
  // Kineto's own log lines (levels below 5) would fill stderr; a level the
  // user set stays.
  setenv("KINETO_LOG_LEVEL", "5", /*overwrite=*/0);
}

ProfileWindow::~ProfileWindow() {
  if (!recording_) return;
  step_scope_.reset();
  try {
    profiler::disableProfiler();
  } catch (...) {
    // Unwinding already: the recording is thrown away either way.
  }
}

void ProfileWindow::begin(std::int64_t unit) {
  if (written_ || unit < range_.first || unit > range_.last) return;
  if (!recording_) {
    // Set-up (CUPTI's on a GPU) before the recording starts, so that it is not
    // in the trace. Prepared only here: a preparation never followed by a
    // recording leaves Kineto waiting in its warm-up, and the next recording
    // of the process then fails to start.
    profiler::prepareProfiler(profiler_config(), activities_for(device_));
    profiler::enableProfiler(profiler_config(), activities_for(device_));
    recording_ = true;
  }
  step_scope_ = std::make_unique<StepScope>(unit);
}

void ProfileWindow::end(std::int64_t unit) {
  if (!recording_ || unit < range_.first || unit > range_.last) return;
  step_scope_.reset();
  ++units_recorded_;
  if (unit == range_.last) stop_and_write();
}

bool ProfileWindow::finish() {
  if (recording_) stop_and_write();
  return written_;
}

void ProfileWindow::stop_and_write() {
  step_scope_.reset();
  wait_for_device(device_);
  recording_ = false;
  const std::unique_ptr<profiler::ProfilerResult> result = profiler::disableProfiler();
  // Kineto writes the file itself and reports a failure only in its log: it
  // writes into a directory of its own here, and the bytes are then checked
  // and moved into the output, which appears complete or not at all.
  std::string dir_template = (fs::temp_directory_path() / "kalm-profile-XXXXXX").string();
  std::vector<char> dir_name(dir_template.begin(), dir_template.end());
  dir_name.push_back('\0');
  if (mkdtemp(dir_name.data()) == nullptr)
    throw IoError("--profile: cannot make a temporary directory in " + fs::temp_directory_path().string() + ": " +
                  std::strerror(errno));
  const fs::path dir(dir_name.data());
  const fs::path staged = dir / "trace.json";
  std::string bytes;
  {
    result->save(staged.string());
    std::ifstream in(staged, std::ios::binary);
    if (in) bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  io::remove_tree_nothrow(dir.string());
  // A Chrome trace is one JSON object holding "traceEvents".
  if (bytes.find("\"traceEvents\"") == std::string::npos)
    throw IoError("--profile: LibTorch's profiler wrote no trace (" + std::to_string(bytes.size()) +
                  " bytes in " + staged.string() + "); nothing written to " + path_);
  output_->file.write(bytes.data(), bytes.size());
  output_->file.commit();
  written_ = true;
}

}  // namespace kalm::core
