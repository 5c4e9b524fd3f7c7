#include "kalm/model/device.h"

#include <cstdlib>

#include <ATen/autocast_mode.h>

#include "kalm/error.h"


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


Autocast::Autocast(const torch::Device& device, bool enabled) : enabled_(enabled), type_(device.type()) {
  if (!enabled_) return;
  if (type_ != torch::kCPU && type_ != torch::kCUDA)
    throw UsageError("bf16 autocast runs on cpu or cuda, not " + device.str());
  previous_enabled_ = at::autocast::is_autocast_enabled(type_);
  previous_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, at::kBFloat16);
  at::autocast::increment_nesting();
}

Autocast::~Autocast() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type_, previous_enabled_);
  at::autocast::set_autocast_dtype(type_, previous_dtype_);
}

torch::Tensor upload(const torch::Tensor& host, const torch::Device& device) {
  if (host.device() == device) return host;
  if (!host.is_cpu() || !device.is_cuda()) return host.to(device);
  const torch::Tensor pinned = host.is_pinned() ? host : host.pin_memory();
  return pinned.to(device, /*non_blocking=*/true);
}

void use_deterministic_kernels(const torch::Device& device) {
  if (device.is_cpu()) return;
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setBenchmarkCuDNN(false);
}

void enable_tf32(const torch::Device& device) {
  if (!device.is_cuda())
    throw UsageError("--dtype tf32 is a GPU mode (TF32 tensor cores); on " + device.str() + " use f32");
  at::globalContext().setAllowTF32CuBLAS(true);
  at::globalContext().setAllowTF32CuDNN(true);
}

}  // namespace kalm::model
