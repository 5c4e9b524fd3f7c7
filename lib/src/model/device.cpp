#include "kalm/model/device.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "kalm/error.h"

// LibTorch 2.4 folded the per-device autocast functions (is_cpu_enabled,
// set_enabled for CUDA, ...) into ones taking the device type and deprecated
// the old names; 1.13 (Debian's) has only the old ones.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define KALM_AUTOCAST_BY_DEVICE_TYPE 1
#else
#define KALM_AUTOCAST_BY_DEVICE_TYPE 0
#endif

namespace kalm::model {

torch::Device parse_device(const std::string& name) {
  const std::string wanted = "--device wants cpu, cuda or cuda:N, got '" + name + "'";
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const std::exception&) {
    throw UsageError(wanted);
  }
  if (!device.is_cpu() && !device.is_cuda()) throw UsageError(wanted);
  if (device.is_cpu() && device.has_index()) throw UsageError(wanted);
  if (device.is_cuda()) {
    if (!torch::cuda::is_available())
      throw UsageError("--device " + name + ": this build of LibTorch has no CUDA, or no GPU is visible");
    const auto count = static_cast<std::int64_t>(torch::cuda::device_count());
    if (device.has_index() && device.index() >= count)
      throw UsageError("--device " + name + ": only " + std::to_string(count) + " GPU(s) are visible (cuda:0.." +
                       std::to_string(count - 1) + ")");
  }
  return device;
}

torch::Device device_for_local_rank(const torch::Device& device, int local_rank) {
  if (!device.is_cuda() || device.has_index()) return device;
  const auto count = static_cast<int>(torch::cuda::device_count());
  // A launcher that gives each process its own GPU (Slurm's --gpus-per-task
  // sets CUDA_VISIBLE_DEVICES per task) leaves one visible GPU, cuda:0,
  // whatever the local rank.
  if (count == 1 && local_rank >= 0) return torch::Device(torch::kCUDA, 0);
  if (local_rank < 0 || local_rank >= count)
    throw UsageError("--device cuda: local rank " + std::to_string(local_rank) +
                     " (LOCAL_RANK or SLURM_LOCALID) names no visible GPU (" + std::to_string(count) +
                     " visible); give --device cuda:N");
  return torch::Device(torch::kCUDA, static_cast<torch::DeviceIndex>(local_rank));
}

namespace {

bool autocast_enabled(torch::DeviceType type) {
#if KALM_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::is_autocast_enabled(type);
#else
  return type == torch::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

void set_autocast_enabled(torch::DeviceType type, bool enabled) {
#if KALM_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_enabled(type, enabled);
#else
  if (type == torch::kCPU)
    at::autocast::set_cpu_enabled(enabled);
  else
    at::autocast::set_enabled(enabled);
#endif
}

torch::ScalarType autocast_dtype(torch::DeviceType type) {
#if KALM_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::get_autocast_dtype(type);
#else
  return type == torch::kCPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
#endif
}

void set_autocast_dtype(torch::DeviceType type, torch::ScalarType dtype) {
#if KALM_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == torch::kCPU)
    at::autocast::set_autocast_cpu_dtype(dtype);
  else
    at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

}  // namespace

Autocast::Autocast(const torch::Device& device, bool enabled) : enabled_(enabled), type_(device.type()) {
  if (!enabled_) return;
  if (type_ != torch::kCPU && type_ != torch::kCUDA)
    throw UsageError("bf16 autocast runs on cpu or cuda, not " + device.str());
  previous_enabled_ = autocast_enabled(type_);
  previous_dtype_ = autocast_dtype(type_);
  set_autocast_enabled(type_, true);
  set_autocast_dtype(type_, at::kBFloat16);
  at::autocast::increment_nesting();
}

Autocast::~Autocast() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast_enabled(type_, previous_enabled_);
  set_autocast_dtype(type_, previous_dtype_);
}

}  // namespace kalm::model
