#pragma once
// The text encoder: Qwen2 and Gemma3 decoder stacks as torch::nn::Modules,
// run as embedding models (no LM head, no KV cache).
//
// Semantics follow transformers' eager implementation in float32 (checked to
// 1e-5 on L2-normalised embeddings by tests/unit/model/test_parity.cpp):
//  - Qwen2: RMSNorm in float32 then cast back; RoPE (rotate_half, rope_theta);
//    grouped-query attention with q/k/v bias; SwiGLU MLP; final norm.
//  - Gemma3: embeddings times sqrt(hidden) rounded to the compute dtype;
//    RMSNorm with (1 + weight); four norms per layer; q_norm / k_norm; GELU-tanh
//    MLP; scores scaled by query_pre_attn_scalar^-0.5 (never softcapped: see
//    ModelConfig::attn_logit_softcapping);
//    sliding (local, rope_local_base_freq) and full (global, rope_theta with
//    rope_scaling) layers.
//  - Attention causal or bidirectional (ModelConfig::attention_window for the
//    local layers' reach), computed by at::scaled_dot_product_attention (fused
//    kernels: flash / memory-efficient on CUDA, the flash CPU kernel on CPU),
//    grouped-query heads passed as they are (enable_gqa). Padding keys never
//    reach a real token; a padded query row that would see nothing attends to
//    itself, so no row is empty and nothing turns into NaN.
//
// Inputs are right-padded: position ids are 0..L-1 for every row, so a row's
// real tokens get the same positions as when run alone. forward() rejects a
// left-padded mask (UsageError) rather than computing shifted positions.
//
// Internally q/k/v and gate/up projections are fused into one matrix each
// (fewer, larger GEMMs); hf_tensors()/load_hf_tensors() speak transformers'
// per-projection names so checkpoints stay interchangeable.
//
// Thread safety: forward() does not modify the module; several threads may
// run it at once under torch::NoGradGuard. Loading, to() and set_attention()
// need exclusive access.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kalm/model/config.h"
#include "kalm/model/pooling.h"

namespace kalm::model {

// bf16 inference on the CPU runs RMSNorm (with the residual add before it),
// RoPE and the SiLU gate as fused one-pass kernels (lib/src/model/fused_cpu.h)
// instead of LibTorch's op-by-op chains, and float32 training on the CPU runs
// RMSNorm's backward as one pass per row; on by default. Off gives the
// op-by-op path, for comparison (kalm-bench-embed, tests). Process-wide.
void set_fused_cpu_kernels(bool on);
bool fused_cpu_kernels();
// The instruction set the fused kernels' row loops run with on this CPU:
// "x86-64-v4" (AVX-512), "x86-64-v3" (AVX2, FMA) or "default" (the compiler's
// baseline); "only T" in a build made for the single target T (tests).
std::string fused_cpu_kernel_isa();

// Qwen2 style: w * norm(x); Gemma style: (1 + w) * norm(x), both normalised in
// float32 and returned in x's dtype. weight: [dim].
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(std::int64_t dim, double eps, bool one_plus_weight,
              const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;
  // {x + y, forward(x + y)}: a residual add and the norm that reads its sum
  // (one pass when the fused CPU kernels apply).
  std::pair<torch::Tensor, torch::Tensor> add_and_forward(const torch::Tensor& x, const torch::Tensor& y) const;
  // Whether forward(x) takes the fused bf16 CPU kernel.
  bool fused_applies(const torch::Tensor& x) const;
  torch::Tensor weight;

 private:
  double eps_;
  bool one_plus_weight_;
};
TORCH_MODULE(RMSNorm);

// A linear map y = x W^T (+ b) whose parameters are allocated uninitialised
// in the given dtype/device (torch::nn::Linear would random-initialise
// billions of weights only to overwrite them). weight [out, in], bias [out].
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(std::int64_t in, std::int64_t out, bool bias, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight;
  torch::Tensor bias;  // undefined when there is none
};
TORCH_MODULE(Projection);

// Token embedding table, weight [vocab, hidden], allocated like Projection.
class EmbeddingTableImpl : public torch::nn::Module {
 public:
  EmbeddingTableImpl(std::int64_t vocab, std::int64_t dim, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids) const;  // [B, L] -> [B, L, dim]
  torch::Tensor weight;
};
TORCH_MODULE(EmbeddingTable);

// Which keys each query may attend to, in the form scaled_dot_product_attention
// takes: `allowed` a bool mask broadcastable to [B, 1, L, L] (true = attend), or
// undefined when `causal` alone says it (keys after the query dropped: with
// right padding no real token then sees a padding key).
struct AttentionMask {
  torch::Tensor allowed;
  bool causal = false;
};

namespace detail {
// What kalm hands to at::scaled_dot_product_attention: q [B, H, L, D], k and v
// [B, K, L, D] or, where `repeat_kv` is set, [B, H, L, D] with each key/value
// head repeated for the H / K query heads that share it (enable_gqa then
// false). On CUDA a call with grouped heads that flash attention cannot take
// (a mask, float32, a GPU or build without flash) would otherwise run
// LibTorch's math kernel ([B, H, L, L] scores in float32): the
// memory-efficient kernel takes no grouped heads.
// Repeating costs (H / K - 1) copies of k and v, small beside the scores.
struct SdpaInputs {
  torch::Tensor q, k, v;
  std::optional<torch::Tensor> mask;
  bool causal = false;
  bool enable_gqa = false;
};
// q [B, L, H, D], k and v [B, L, K, D] as projected.
SdpaInputs sdpa_inputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const AttentionMask& mask, bool repeat_kv);
// Whether `attention_mask` [B, L] is known on the host to hold no padding: a
// CPU tensor with no zero. False for a mask on a GPU (finding out would wait
// for the device).
bool host_mask_unpadded(const torch::Tensor& attention_mask);
// Whether kalm repeats key/value heads for this call: CUDA, K < H, and a mask,
// a `compute_type` (what SDPA runs in: autocast's type where autocast is on)
// other than float16 / bfloat16, the two flash attention takes, or
// `grouped_call_fused()` false: LibTorch would run the unmasked call with
// grouped heads in its math kernel, because flash attention cannot take it on
// this GPU or build (before sm80 such as T4 and V100, head size over 256, flash
// turned off). `grouped_call_fused` is asked only in that last case.
bool sdpa_repeats_kv(const torch::Device& device, const AttentionMask& mask, std::int64_t heads,
                     std::int64_t kv_heads, torch::ScalarType compute_type,
                     const std::function<bool()>& grouped_call_fused);
// Whether LibTorch's kernel choice (at::_fused_sdp_choice) for an unmasked
// call of q's shape [B, H, L, D] against K key/value heads, with enable_gqa,
// in `compute_type` and q's device and requires_grad, is a fused kernel. It
// asks with empty tensors of one row (no data moves, no synchronisation).
bool sdpa_grouped_call_fused(const torch::Tensor& q, std::int64_t kv_heads, bool causal, double scale,
                             torch::ScalarType compute_type);
}  // namespace detail

// Self-attention with fused q/k/v. qkv_proj.weight: [(H + 2 K) * D, hidden].
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, const torch::TensorOptions& options);
  // x [B, L, hidden]; cos/sin [L, D] in x's dtype.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const AttentionMask& mask) const;

  Projection qkv_proj{nullptr};
  Projection o_proj{nullptr};
  RMSNorm q_norm{nullptr};  // Gemma3 only
  RMSNorm k_norm{nullptr};

 private:
  std::int64_t heads_, kv_heads_, head_dim_;
  double scale_;
};
TORCH_MODULE(Attention);

// Gated MLP with fused gate/up: down(act(gate(x)) * up(x)).
// gate_up_proj.weight: [2 * intermediate, hidden] (gate rows first).
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;

  Projection gate_up_proj{nullptr};
  Projection down_proj{nullptr};

 private:
  bool gelu_tanh_;
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, std::int64_t layer,
                   const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const AttentionMask& mask) const;
  // Pre-norm (Qwen2) layers only: given x and input_layernorm(x), returns
  // {y, next_norm(y)} for the layer's output y, the residual adds fused into
  // the norms (the encoder's loop when the fused CPU kernels apply).
  std::pair<torch::Tensor, torch::Tensor> forward_normed(const torch::Tensor& x, const torch::Tensor& x_normed,
                                                         const torch::Tensor& cos, const torch::Tensor& sin,
                                                         const AttentionMask& mask,
                                                         const RMSNormImpl& next_norm) const;
  bool sliding() const { return sliding_; }

  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr};
  RMSNorm post_attention_layernorm{nullptr};
  RMSNorm pre_feedforward_layernorm{nullptr};   // Gemma3 only
  RMSNorm post_feedforward_layernorm{nullptr};  // Gemma3 only

 private:
  bool gemma_;
  bool sliding_;
};
TORCH_MODULE(DecoderLayer);

// One transformers tensor the encoder holds: name without prefix
// ("layers.0.self_attn.q_proj.weight") and its shape.
struct HfTensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
};

class EncoderImpl : public torch::nn::Module {
 public:
  // Parameters are allocated uninitialised with `options` (dtype, device);
  // load_hf_tensors() or init_parameters() fills them. Throws ModelError for
  // an invalid config.
  EncoderImpl(ModelConfig config, AttentionMode attention,
              const torch::TensorOptions& options = torch::TensorOptions().dtype(torch::kFloat));

  // Random weights (normal, std 0.02; norms neutral), reproducible from
  // `seed` on any device: for tests and for training from scratch.
  void init_parameters(std::uint64_t seed);

  // input_ids [B, L] integer (token ids in [0, vocab_size)); attention_mask
  // [B, L], nonzero = token, right-padded. Returns the last hidden state
  // [B, L, hidden] in the parameters' dtype on their device. Values at padded
  // positions are unspecified (finite). Inputs are moved to the parameters'
  // device; ids at padded positions are ignored. Throws UsageError for bad
  // shapes, ids out of range at token positions, or a left-padded mask.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) const;

  // forward() in two halves, for callers that look up the tokens of several
  // batches at once (training's length buckets: one embedding-table gradient
  // per step instead of one per bucket). checked_input_ids() applies
  // forward()'s input checks and returns the ids on the parameters' device
  // with padded positions set to 0, ready for embed_tokens;
  // forward_from_embeddings() takes embed_tokens' output [B, L, hidden] (not
  // yet scaled: Gemma's sqrt(hidden) scaling happens here) and runs the layers
  // and the final norm. Throws UsageError as forward() does. `unpadded`: the
  // caller knows from its host data whether every row's mask is all ones (a
  // GPU then attends without a key mask); unset, it is read from the mask
  // when that is on the host, else taken as padded.
  torch::Tensor checked_input_ids(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) const;
  torch::Tensor forward_from_embeddings(const torch::Tensor& token_embeddings, const torch::Tensor& attention_mask,
                                        std::optional<bool> unpadded = std::nullopt) const;

  // forward + pool + L2-normalise (+ Matryoshka truncation when dim is set):
  // [B, D] float32.
  torch::Tensor embed(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                      Pooling pooling, bool normalize = true,
                      std::optional<std::int64_t> dim = std::nullopt) const;

  // Where query i may attend to key j, as bool [B, 1, L, L] (the semantics;
  // exposed for tests). `sliding` selects the local layers' mask.
  torch::Tensor attention_allowed(const torch::Tensor& attention_mask, bool sliding) const;
  // The same in the cheapest form SDPA takes: is_causal alone where it says
  // everything (causal, no window within L: flash kernels apply), a key-padding
  // mask [B, 1, 1, L] for bidirectional full layers (none when `unpadded`: a
  // batch without padding, known on the host), the dense mask otherwise.
  AttentionMask attention_mask_for(const torch::Tensor& attention_mask, bool sliding, bool unpadded = false) const;

  // Every tensor transformers' base model holds, in transformers' order.
  std::vector<HfTensorSpec> hf_tensor_specs() const;
  // Copies tensors named as in hf_tensor_specs() (any floating dtype/device)
  // into the parameters, converting dtype and device, one tensor at a time
  // (no intermediate copy); `copied` (optional) is called with each name right
  // after its copy, so a loader can drop the source's memory as it goes. A
  // parameter that already shares its source's storage is left as it is.
  // Throws ModelError naming `source` and the tensor when one is missing or has
  // the wrong shape.
  void load_hf_tensors(const std::map<std::string, torch::Tensor>& tensors, const std::string& source,
                       const std::function<void(const std::string&)>& copied = {});
  // The parameters under transformers' names (q/k/v and gate/up split again),
  // as views or copies in the parameters' dtype and device.
  std::vector<std::pair<std::string, torch::Tensor>> hf_tensors() const;

  const ModelConfig& config() const { return config_; }
  AttentionMode attention() const { return attention_; }
  void set_attention(AttentionMode mode) { attention_ = mode; }
  torch::ScalarType dtype() const;
  torch::Device device() const;
  std::int64_t hidden_size() const { return config_.hidden_size; }

  EmbeddingTable embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};

 private:
  // cos/sin [L, D] in float32 for a RoPE base and position divisor.
  std::pair<torch::Tensor, torch::Tensor> rope(std::int64_t length, double base, double factor,
                                               const torch::Device& device) const;

  ModelConfig config_;
  AttentionMode attention_;
  std::vector<DecoderLayer> layer_list_;
};
TORCH_MODULE(Encoder);

// "f32" / "float32" / "tf32" -> kFloat, "bf16" / "bfloat16" -> kBFloat16;
// UsageError otherwise. (tf32 is float32 with TF32 matmuls: enable_tf32.)
torch::ScalarType parse_compute_dtype(const std::string& name);

}  // namespace kalm::model
