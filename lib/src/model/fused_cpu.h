// Fused element-wise kernels for bfloat16 inference on the CPU, and the
// float32 RMSNorm backward for training.
//
// Why: on a CPU with fast bf16 GEMMs a forward pass spends a large share of
// its time in LibTorch's element-wise kernels and in OpenMP threads waiting
// between them (bench/README: 27% + 12.5% on a 2-core Xeon with AMX, 8192-token
// batches; a few percent on an AMD EPYC without AMX). Each RMSNorm there is
// eight kernels (to float32, square, sum, divide, rsqrt, multiply, to bf16,
// times the weight), RoPE five per tensor, the SiLU gate two; each kernel reads
// and writes the whole activation and ends in a barrier. Here each is one pass
// over the rows, with the same rounding points as transformers' bf16 path:
// values are rounded to bf16 exactly where the op-by-op version stores a bf16
// tensor, so the results are the op-by-op ones except where a float32 sum's
// order or exp()'s last bit decides a bf16 rounding (a bf16 unit in the last
// place, rarely; tests/unit/model/test_fused_cpu.cpp bounds it).
//
// Used only where they apply (fused_cpu_applies): CPU tensors in bf16, no
// autograd graph being recorded (training keeps LibTorch's differentiable
// ops), rows contiguous. Everything else takes the op-by-op path.
//
// One kernel serves training: RMSNorm's backward in float32 (see
// rms_normalize_f32 below), since autograd's chain over the decomposed
// formula was a quarter of a CPU pre-training step of a 0-layer model.
#pragma once

#include <torch/torch.h>

#include <utility>

namespace kalm::model::detail {

// True when the fused kernels may replace the op-by-op path for x: the switch
// (kalm::model::set_fused_cpu_kernels) is on, x is a bf16 CPU tensor whose last
// dimension is contiguous, and autograd is not recording.
bool fused_cpu_applies(const torch::Tensor& x);

// RMSNorm over the last dimension, rounded as transformers rounds it:
// Qwen2 (one_plus_weight false): bf16(w * bf16(x * rsqrt(mean(x^2) + eps)));
// Gemma3 (true): bf16(x * rsqrt(mean(x^2) + eps) * (float(w) + 1)).
// x must be contiguous.
torch::Tensor rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                            bool one_plus_weight);

// h = x + y (bf16) and rms_norm_bf16(h) in one pass; returns {h, normed}.
std::pair<torch::Tensor, torch::Tensor> add_rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& y,
                                                          const torch::Tensor& weight, double eps,
                                                          bool one_plus_weight);

// [..., 2I] -> [..., I]: bf16(bf16(silu(gate)) * up), gate the first half.
torch::Tensor silu_gate_bf16(const torch::Tensor& gate_up);

// RoPE on x [B, L, N, D] (heads and head dims contiguous, batch and position
// strides free, e.g. a slice of the fused q/k/v projection):
// bf16(bf16(x * cos) + bf16(rotate_half(x) * sin)) with cos/sin [L, D] bf16.
// Returns a contiguous [B, L, N, D] tensor.
torch::Tensor rotary_bf16(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Training (autograd recording) on the CPU in float32: x * rsqrt(mean(x^2) +
// eps) over the last dimension, no weight, differentiable. The forward values
// are at::rms_norm's exactly; the backward is one fused pass per row instead
// of autograd's ~10 kernels over the decomposed formula. Applies
// (fused_rms_normalize_applies) when the fused-kernel switch is on, x is a
// float32 CPU tensor with a non-empty last dimension that requires grad, and
// autograd is recording.
bool fused_rms_normalize_applies(const torch::Tensor& x);
torch::Tensor rms_normalize_f32(const torch::Tensor& x, double eps);

}  // namespace kalm::model::detail
