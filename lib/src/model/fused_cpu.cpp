// Fused bf16 element-wise kernels for CPU inference (see fused_cpu.h for why).
//
// The row loops are plain C++ that GCC vectorises; each row function is built
// for x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and the baseline and picked at load time
// (target_clones), so one binary uses the widest vectors the CPU has.
#include "fused_cpu.h"

#include "kalm/error.h"
#include "kalm/model/transformer.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

// KALM_FUSED_ROW_TARGET (a GCC target attribute string such as
// "arch=x86-64-v3", or "arch=x86-64" for the baseline) builds the row
// functions for that one instruction set only: tests/CMakeLists.txt does, so
// that the variants a CPU with AVX-512 never picks are tested too.
#if defined(KALM_FUSED_ROW_TARGET)
#define KALM_ROW_KERNEL __attribute__((target(KALM_FUSED_ROW_TARGET)))
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KALM_ROW_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define KALM_ROW_KERNEL_CLONES 1
#else
#define KALM_ROW_KERNEL
#endif

namespace kalm::model {

namespace {
std::atomic<bool> g_fused_cpu_kernels{true};
}  // namespace

void set_fused_cpu_kernels(bool on) { g_fused_cpu_kernels.store(on, std::memory_order_relaxed); }
bool fused_cpu_kernels() { return g_fused_cpu_kernels.load(std::memory_order_relaxed); }

std::string fused_cpu_kernel_isa() {
#if defined(KALM_FUSED_ROW_TARGET)
  return std::string("only ") + KALM_FUSED_ROW_TARGET;
#elif defined(KALM_ROW_KERNEL_CLONES)
  // The same order of preference as the target_clones resolver.
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
  return "default";
#else
  return "default";
#endif
}

}  // namespace kalm::model

namespace kalm::model::detail {

namespace {

// bf16 <-> float32 as c10::BFloat16 converts: widening is exact; narrowing
// rounds to nearest, ties to even, and keeps NaN a NaN.
inline float widen(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline std::uint16_t narrow(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return f != f ? static_cast<std::uint16_t>(0x7FC0u) : static_cast<std::uint16_t>(rounded);
}

// The value a bf16 tensor would hold: float -> bf16 -> float.
inline float round_bf16(float f) { return widen(narrow(f)); }

// exp(x) in float32 to about one unit in the last place, branch-free so that
// loops over it vectorise: x = n ln2 + r with |r| <= ln2/2, exp(r) by the
// classic minimax polynomial, times 2^n built in exponent bits (in two halves,
// so that 2^n itself never overflows). x is clamped to [-104, 89], where the
// product itself overflows to +inf (above ln(FLT_MAX) ~ 88.72) or underflows
// to 0 or a subnormal (below ~ -87.34; 1 + that is 1 in the SiLU either way).
// The clamp is integer min/max on order-preserving keys of the bits: a float
// select (?:, std::min) lets GCC thread the loop into one path per clamp arm
// and vectorise each with its own division, which made the SiLU gate 1.6x
// slower (three divisions per vector instead of one).
inline std::int32_t float_order_key(float f) {
  std::int32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b ^ ((b >> 31) & 0x7FFFFFFF);  // its own inverse; signed order = float order
}

inline float float_from_order_key(std::int32_t k) {
  const std::int32_t b = k ^ ((k >> 31) & 0x7FFFFFFF);
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// exp(x) for the SiLU: a NaN x gives some finite or infinite value (the
// SiLU's numerator carries the NaN through).
inline float exp_f32(float x) {
  const float hi = 89.0f, lo = -104.0f;
  const float xc = float_from_order_key(
      std::min(std::max(float_order_key(x), float_order_key(lo)), float_order_key(hi)));
  // Round to nearest by adding 1.5 * 2^23: the sum's low mantissa bits then
  // hold n as an integer (read from the bits, so that no float-to-int
  // conversion of a NaN is undefined), and taking 1.5 * 2^23 away gives n
  // as a float (vectorises without SSE4.1's round instruction).
  const float shifter = 12582912.0f;
  const float shifted = xc * 1.44269504088896341f + shifter;
  const float n = shifted - shifter;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  std::uint32_t shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
  // |n| <= 151 for clamped x: each half's biased exponent stays in 1..254.
  const std::int32_t ni = static_cast<std::int32_t>(shifted_bits - 0x4B400000u);
  const std::int32_t half = ni / 2;
  const std::uint32_t bits1 = static_cast<std::uint32_t>(half + 127) << 23;
  const std::uint32_t bits2 = static_cast<std::uint32_t>(ni - half + 127) << 23;
  float scale1, scale2;
  std::memcpy(&scale1, &bits1, sizeof scale1);
  std::memcpy(&scale2, &bits2, sizeof scale2);
  return p * scale1 * scale2;
}

KALM_ROW_KERNEL
void rms_rows(const std::uint16_t* __restrict x, const std::uint16_t* __restrict y, std::uint16_t* __restrict sum_out,
              const std::uint16_t* __restrict weight, std::uint16_t* __restrict out, std::int64_t rows,
              std::int64_t cols, float eps, bool one_plus_weight) {
  for (std::int64_t row = 0; row < rows; ++row) {
    const std::uint16_t* xr = x + row * cols;
    std::uint16_t* outr = out + row * cols;
    const std::uint16_t* hr = xr;
    if (y) {
      // h = x + y, stored in bf16 as the op-by-op residual add stores it.
      const std::uint16_t* yr = y + row * cols;
      std::uint16_t* sr = sum_out + row * cols;
#pragma omp simd
      for (std::int64_t j = 0; j < cols; ++j) sr[j] = narrow(widen(xr[j]) + widen(yr[j]));
      hr = sr;
    }
    float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
    for (std::int64_t j = 0; j < cols; ++j) {
      const float v = widen(hr[j]);
      squares += v * v;
    }
    const float inv = 1.0f / std::sqrt(squares / static_cast<float>(cols) + eps);
    if (one_plus_weight) {
#pragma omp simd
      for (std::int64_t j = 0; j < cols; ++j) outr[j] = narrow(widen(hr[j]) * inv * (widen(weight[j]) + 1.0f));
    } else {
#pragma omp simd
      for (std::int64_t j = 0; j < cols; ++j) outr[j] = narrow(widen(weight[j]) * round_bf16(widen(hr[j]) * inv));
    }
  }
}

KALM_ROW_KERNEL
void silu_gate_rows(const std::uint16_t* __restrict gate_up, std::uint16_t* __restrict out, std::int64_t rows,
                    std::int64_t width) {
  for (std::int64_t row = 0; row < rows; ++row) {
    const std::uint16_t* gate = gate_up + row * 2 * width;
    const std::uint16_t* up = gate + width;
    std::uint16_t* o = out + row * width;
#pragma omp simd
    for (std::int64_t j = 0; j < width; ++j) {
      const float g = widen(gate[j]);
      o[j] = narrow(round_bf16(g / (1.0f + exp_f32(-g))) * widen(up[j]));
    }
  }
}

// One [N, D] block of heads at one position.
KALM_ROW_KERNEL
void rotary_heads(const std::uint16_t* __restrict x, const std::uint16_t* __restrict cos,
                  const std::uint16_t* __restrict sin, std::uint16_t* __restrict out, std::int64_t heads,
                  std::int64_t D) {
  const std::int64_t half = D / 2;
  for (std::int64_t h = 0; h < heads; ++h) {
    const std::uint16_t* xh = x + h * D;
    std::uint16_t* oh = out + h * D;
#pragma omp simd
    for (std::int64_t j = 0; j < half; ++j) {
      const float a = round_bf16(widen(xh[j]) * widen(cos[j]));
      const float b = round_bf16(-widen(xh[j + half]) * widen(sin[j]));
      oh[j] = narrow(a + b);
    }
#pragma omp simd
    for (std::int64_t j = half; j < D; ++j) {
      const float a = round_bf16(widen(xh[j]) * widen(cos[j]));
      const float b = round_bf16(widen(xh[j - half]) * widen(sin[j]));
      oh[j] = narrow(a + b);
    }
  }
}

// The gradient of n = x * rsqrt(mean(x^2) + eps) over one row of float32:
// with r = rsqrt(mean(x^2) + eps) and dot = sum(g * x),
// dx = r * g - (r^3 * dot / cols) * x. Each row is its own: no sum across rows,
// so the result does not depend on how the rows are shared among threads.
KALM_ROW_KERNEL
void rms_backward_rows(const float* __restrict x, const float* __restrict g, float* __restrict dx,
                       std::int64_t rows, std::int64_t cols, float eps) {
  for (std::int64_t row = 0; row < rows; ++row) {
    const float* xr = x + row * cols;
    const float* gr = g + row * cols;
    float* dr = dx + row * cols;
    float squares = 0.0f, dot = 0.0f;
#pragma omp simd reduction(+ : squares, dot)
    for (std::int64_t j = 0; j < cols; ++j) {
      squares += xr[j] * xr[j];
      dot += gr[j] * xr[j];
    }
    const float r = 1.0f / std::sqrt(squares / static_cast<float>(cols) + eps);
    const float along_x = r * r * r * dot / static_cast<float>(cols);
#pragma omp simd
    for (std::int64_t j = 0; j < cols; ++j) dr[j] = r * gr[j] - along_x * xr[j];
  }
}

const std::uint16_t* bf16_data(const torch::Tensor& t) {
  return reinterpret_cast<const std::uint16_t*>(t.data_ptr<at::BFloat16>());
}
std::uint16_t* bf16_data_mut(torch::Tensor& t) { return reinterpret_cast<std::uint16_t*>(t.data_ptr<at::BFloat16>()); }

// Rows per task: enough elements that a thread's share outweighs waking it.
std::int64_t grain_rows(std::int64_t cols) { return std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(1, cols)); }

void require(bool ok, const char* what) {
  if (!ok) throw InternalError(std::string("fused bf16 kernel: ") + what);
}

torch::Tensor rms_common(const torch::Tensor& x, const torch::Tensor* y, torch::Tensor* sum_out,
                         const torch::Tensor& weight, double eps, bool one_plus_weight) {
  const std::int64_t cols = x.size(-1);
  require(x.is_contiguous() && x.scalar_type() == torch::kBFloat16, "rms_norm input must be contiguous bf16");
  require(weight.dim() == 1 && weight.size(0) == cols, "rms_norm weight does not match the last dimension");
  const torch::Tensor w = weight.to(torch::kBFloat16).contiguous();
  torch::Tensor out = torch::empty_like(x);
  torch::Tensor yc;
  if (y) {
    require(y->sizes() == x.sizes(), "residual shapes differ");
    yc = y->to(torch::kBFloat16).contiguous();
    *sum_out = torch::empty_like(x);
  }
  const std::int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  const std::uint16_t* xp = bf16_data(x);
  const std::uint16_t* yp = y ? bf16_data(yc) : nullptr;
  std::uint16_t* sp = y ? bf16_data_mut(*sum_out) : nullptr;
  const std::uint16_t* wp = bf16_data(w);
  std::uint16_t* op = bf16_data_mut(out);
  const float eps_f = static_cast<float>(eps);
  at::parallel_for(0, rows, grain_rows(cols), [&](std::int64_t begin, std::int64_t end) {
    rms_rows(xp + begin * cols, yp ? yp + begin * cols : nullptr, sp ? sp + begin * cols : nullptr, wp,
             op + begin * cols, end - begin, cols, eps_f, one_plus_weight);
  });
  return out;
}

}  // namespace

bool fused_cpu_applies(const torch::Tensor& x) {
  return fused_cpu_kernels() && x.defined() && x.device().is_cpu() && x.scalar_type() == torch::kBFloat16 &&
         x.dim() >= 1 && x.stride(-1) == 1 && !at::GradMode::is_enabled();
}

// Each kernel is a named scope for LibTorch's profiler (and the unit tests,
// which count them to know the fused path ran).
torch::Tensor rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool one_plus_weight) {
  RECORD_USER_SCOPE("kalm::fused_rms_norm");
  return rms_common(x, nullptr, nullptr, weight, eps, one_plus_weight);
}

std::pair<torch::Tensor, torch::Tensor> add_rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& y,
                                                          const torch::Tensor& weight, double eps,
                                                          bool one_plus_weight) {
  RECORD_USER_SCOPE("kalm::fused_add_rms_norm");
  torch::Tensor sum;
  torch::Tensor normed = rms_common(x.contiguous(), &y, &sum, weight, eps, one_plus_weight);
  return {sum, normed};
}

torch::Tensor silu_gate_bf16(const torch::Tensor& gate_up) {
  RECORD_USER_SCOPE("kalm::fused_silu_gate");
  require(gate_up.is_contiguous() && gate_up.scalar_type() == torch::kBFloat16,
          "gate/up input must be contiguous bf16");
  require(gate_up.size(-1) % 2 == 0, "gate/up width must be even");
  const std::int64_t width = gate_up.size(-1) / 2;
  std::vector<std::int64_t> shape(gate_up.sizes().begin(), gate_up.sizes().end());
  shape.back() = width;
  torch::Tensor out = torch::empty(shape, gate_up.options());
  const std::int64_t rows = width == 0 ? 0 : out.numel() / width;
  const std::uint16_t* in = bf16_data(gate_up);
  std::uint16_t* op = bf16_data_mut(out);
  at::parallel_for(0, rows, grain_rows(width), [&](std::int64_t begin, std::int64_t end) {
    silu_gate_rows(in + begin * 2 * width, op + begin * width, end - begin, width);
  });
  return out;
}

torch::Tensor rotary_bf16(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  RECORD_USER_SCOPE("kalm::fused_rotary");
  require(x.dim() == 4 && x.scalar_type() == torch::kBFloat16, "rotary input must be [B, L, N, D] bf16");
  const std::int64_t B = x.size(0), L = x.size(1), N = x.size(2), D = x.size(3);
  require(x.stride(3) == 1 && x.stride(2) == D, "rotary input's heads must be contiguous");
  require(D % 2 == 0, "rotary head dimension must be even");
  const torch::Tensor c = cos.to(torch::kBFloat16).contiguous().view({-1, D});
  const torch::Tensor s = sin.to(torch::kBFloat16).contiguous().view({-1, D});
  require(c.size(0) == L && s.size(0) == L, "rotary tables must be [L, D]");
  torch::Tensor out = torch::empty({B, L, N, D}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const std::uint16_t* xp = bf16_data(x);
  const std::uint16_t* cp = bf16_data(c);
  const std::uint16_t* sp = bf16_data(s);
  std::uint16_t* op = bf16_data_mut(out);
  const std::int64_t sb = x.stride(0), sl = x.stride(1);
  at::parallel_for(0, B * L, grain_rows(N * D), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const std::int64_t b = i / L, l = i % L;
      rotary_heads(xp + b * sb + l * sl, cp + l * D, sp + l * D, op + i * N * D, N, D);
    }
  });
  return out;
}

namespace {

// Forward: at::rms_norm without a weight, the op-by-op values exactly (so a
// model trains on the numbers it embeds with). Backward: rms_backward_rows,
// one pass over each row where autograd's chain of the decomposed formula
// (pow, mean, add, rsqrt, two products) runs about ten kernels over the whole
// activation; for a 0-layer model that chain was a quarter of a CPU
// pre-training step.
struct RmsNormalizeF32 : torch::autograd::Function<RmsNormalizeF32> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double eps) {
    ctx->save_for_backward({x});
    ctx->saved_data["eps"] = eps;
    return at::rms_norm(x, {x.size(-1)}, /*weight=*/{}, eps);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    RECORD_USER_SCOPE("kalm::fused_rms_normalize_backward");
    const torch::Tensor x = ctx->get_saved_variables()[0].contiguous();
    const torch::Tensor g = grads[0].to(torch::kFloat).contiguous();
    const float eps = static_cast<float>(ctx->saved_data["eps"].toDouble());
    torch::Tensor dx = torch::empty_like(x);
    const std::int64_t cols = x.size(-1);
    const std::int64_t rows = cols == 0 ? 0 : x.numel() / cols;
    const float* xp = x.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    float* dp = dx.data_ptr<float>();
    at::parallel_for(0, rows, grain_rows(cols), [&](std::int64_t begin, std::int64_t end) {
      rms_backward_rows(xp + begin * cols, gp + begin * cols, dp + begin * cols, end - begin, cols, eps);
    });
    return {dx, torch::Tensor()};
  }
};

}  // namespace

bool fused_rms_normalize_applies(const torch::Tensor& x) {
  return fused_cpu_kernels() && x.defined() && x.device().is_cpu() && x.scalar_type() == torch::kFloat &&
         x.dim() >= 1 && x.size(-1) > 0 && at::GradMode::is_enabled() && x.requires_grad();
}

torch::Tensor rms_normalize_f32(const torch::Tensor& x, double eps) {
  require(x.scalar_type() == torch::kFloat, "rms_normalize input must be float32");
  return RmsNormalizeF32::apply(x, eps);
}

}  // namespace kalm::model::detail
