#pragma once
// Where a model runs: the --device flag shared by kalm-embed, kalm-eval,
// kalm-mine-negatives, kalm-synth-filter, kalm-train and kalm-distill, and the
// autocast scope that runs a float32 model in bfloat16 on that device.
//
// Thread safety: parse_device is pure. Autocast changes LibTorch's per-thread
// autocast state: use it on the thread that runs the model.
// Errors: UsageError naming the flag's value.

#include <torch/torch.h>

#include <string>

namespace kalm::model {

// "cpu", "cuda" or "cuda:N". Throws UsageError for any other name, for CUDA
// when this LibTorch has no CUDA or sees no GPU, and for an index past the
// visible GPUs.
torch::Device parse_device(const std::string& name);

// The device a data-parallel rank uses: a CUDA device without an index
// ("cuda") becomes cuda:local_rank, so that torchrun's processes on one host
// take one GPU each (as PyTorch's scripts do with LOCAL_RANK); when the
// process sees a single GPU (a launcher that isolates one GPU per task) that
// one is cuda:0. Anything else is returned as is. Throws UsageError when
// local_rank names no visible GPU among several.
torch::Device device_for_local_rank(const torch::Device& device, int local_rank);

// `host` on `device` without the host waiting for the device: a CPU tensor
// bound for CUDA is copied into pinned memory (unless it is pinned already)
// and sent with non_blocking, so the copy queues behind the device's work
// instead of synchronising with it (a plain .to(cuda) from pageable memory
// waits for the stream). The pinned buffer stays valid until the copy has
// run: LibTorch's caching host allocator records the copy's stream. Any
// other pair of devices (CPU to CPU, already there) is a plain .to().
torch::Tensor upload(const torch::Tensor& host, const torch::Device& device);

// "tf32" compute dtype: float32 weights and activations, matrix products and
// convolutions on GPU tensor cores in TF32 (10-bit mantissa inputs, float32
// accumulation), as torch.backends.cuda.matmul.allow_tf32 = True. Enables it
// process-wide for `device`. Throws UsageError on CPU, which has no TF32
// (run f32 there): a silent f32 would not be what was asked for.
void enable_tf32(const torch::Device& device);

// Deterministic kernels for training on `device` when it is a GPU, as
// torch.use_deterministic_algorithms(True) plus cuDNN's deterministic mode and
// CUBLAS_WORKSPACE_CONFIG=:4096:8 (set unless the environment sets it; it
// must precede the first cuBLAS call). Flash, memory-efficient and cuDNN
// attention then take their deterministic backward; an operation without a
// deterministic CUDA kernel throws instead of running. Process-wide; a no-op
// on CPU, whose kernels are deterministic for a fixed thread count.
void use_deterministic_kernels(const torch::Device& device);

// bfloat16 autocast on `device`'s type for the scope's lifetime, as
// torch.autocast(device_type, torch.bfloat16): matmuls and linear layers in
// bfloat16, weights, reductions and the rest in float32. Nestable; restores
// the previous state. The cast cache (bf16 copies of the weights) is cleared
// when the outermost scope ends, because the weights change between steps.
class Autocast {
 public:
  Autocast(const torch::Device& device, bool enabled);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool enabled_;
  torch::DeviceType type_;
  bool previous_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kBFloat16;
};

}  // namespace kalm::model
