#pragma once
// AdamW for kalm-train: torch.optim.AdamW(fused=True) in C++. One fused
// multi-tensor kernel (LibTorch's _fused_adamw_, on CPU and CUDA) updates every
// parameter, instead of LibTorch's torch::optim::AdamW, which launches a dozen
// small kernels per parameter (~170 parameters in a 0.5B model: thousands of
// launches per step on a GPU).
//
// Update, per parameter with a gradient g at step t (1-based), as PyTorch:
//   p   *= 1 - lr * weight_decay
//   m    = beta1 * m + (1 - beta1) * g
//   v    = beta2 * v + (1 - beta2) * g^2
//   p   -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// A parameter without a gradient is left alone and its t does not advance.
//
// Checkpoints: optimizer.safetensors, version 2 of kalm's optimiser state:
// "exp_avg.NAME", "exp_avg_sq.NAME" (the parameter's dtype and shape) and
// "step.NAME" (float32 scalar) for every parameter NAME, metadata
// {"kalm_optimizer": "adamw", "kalm_optimizer_version": "2"}. Version 1 was
// torch::save of torch::optim::AdamW (optimizer.pt, before 2026-12-05): such
// a checkpoint is read through LibTorch and resumes where it stopped.
//
// Thread safety: none; one training loop.

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kalm::train {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

inline constexpr const char* kOptimizerStateFile = "optimizer.safetensors";  // version 2
inline constexpr const char* kLegacyOptimizerFile = "optimizer.pt";          // version 1

class FusedAdamW {
 public:
  // named_parameters: the model's parameters under their names (the state
  // is saved by name). Throws UsageError for lr < 0, betas outside [0, 1),
  // eps <= 0 or weight_decay < 0.
  FusedAdamW(std::vector<std::pair<std::string, torch::Tensor>> named_parameters, AdamWOptions options);

  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  // Gradients to undefined (set_to_none, as PyTorch's default).
  void zero_grad();
  // One update of every parameter that has a gradient: one kernel per
  // device and dtype group, no host synchronisation.
  void step();

  // Writes `dir`/optimizer.safetensors (atomically).
  void save(const std::string& dir) const;
  // Reads the state from `dir`: optimizer.safetensors, else a version-1
  // optimizer.pt. Throws FormatError naming the file and the tensor when a
  // parameter is missing, has another shape, or the file is of an unknown
  // version; IoError when neither file exists. State goes onto each
  // parameter's device.
  void load(const std::string& dir);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq, step;  // step: float32 scalar on the parameter's device
  };
  void load_legacy(const std::string& path);
  std::vector<Slot> slots_;
  AdamWOptions options_;
};

}  // namespace kalm::train
