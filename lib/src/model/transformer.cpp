#include "kalm/model/transformer.h"

#include "fused_cpu.h"

#include <ATen/SDPBackend.h>
#include <ATen/autocast_mode.h>
#include <ATen/ops/_fused_sdp_choice.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kalm/error.h"

namespace kalm::model {

namespace {

std::string shape_str(torch::IntArrayRef shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// rotate_half: (x1, x2) -> (-x2, x1) over the last dim.
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

// ---- building blocks -------------------------------------------------------

ProjectionImpl::ProjectionImpl(std::int64_t in, std::int64_t out, bool with_bias,
                               const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({out, in}, options));
  if (with_bias) bias = register_parameter("bias", torch::empty({out}, options));
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor& x) const {
  return torch::linear(x, weight, bias);
}

EmbeddingTableImpl::EmbeddingTableImpl(std::int64_t vocab, std::int64_t dim,
                                       const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({vocab, dim}, options));
}

torch::Tensor EmbeddingTableImpl::forward(const torch::Tensor& ids) const {
  return torch::embedding(weight, ids);
}

RMSNormImpl::RMSNormImpl(std::int64_t dim, double eps, bool one_plus_weight,
                         const torch::TensorOptions& options)
    : eps_(eps), one_plus_weight_(one_plus_weight) {
  weight = register_parameter("weight", torch::empty({dim}, options));
}

bool RMSNormImpl::fused_applies(const torch::Tensor& x) const {
  return detail::fused_cpu_applies(x) && x.is_contiguous() && weight.scalar_type() == torch::kBFloat16;
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) const {
  if (fused_applies(x)) return detail::rms_norm_bf16(x, weight, eps_, one_plus_weight_);
  const torch::Tensor xf = x.to(torch::kFloat);
  // x * rsqrt(mean(x^2) + eps) in float32, as transformers; at::rms_norm is
  // that formula (the same ops on CPU) and one fused kernel on CUDA instead
  // of five. The weight is applied below, where the families differ.
  const torch::Tensor normed = detail::fused_rms_normalize_applies(xf)
                                   ? detail::rms_normalize_f32(xf, eps_)
                                   : at::rms_norm(xf, {xf.size(-1)}, /*weight=*/{}, eps_);
  // The two families round at different points (transformers PR 29402):
  // Gemma multiplies in float32 then casts, Qwen2 casts then multiplies.
  if (one_plus_weight_) return (normed * (weight.to(torch::kFloat) + 1.0)).to(x.scalar_type());
  return weight * normed.to(x.scalar_type());
}

std::pair<torch::Tensor, torch::Tensor> RMSNormImpl::add_and_forward(const torch::Tensor& x,
                                                                     const torch::Tensor& y) const {
  if (fused_applies(x) && y.scalar_type() == x.scalar_type())
    return detail::add_rms_norm_bf16(x, y, weight, eps_, one_plus_weight_);
  torch::Tensor sum = x + y;
  torch::Tensor normed = forward(sum);
  return {std::move(sum), std::move(normed)};
}

AttentionImpl::AttentionImpl(const ModelConfig& c, const torch::TensorOptions& options)
    : heads_(c.num_attention_heads),
      kv_heads_(c.num_key_value_heads),
      head_dim_(c.head_dim),
      scale_(c.attention_scale()) {
  const bool gemma = c.architecture == Architecture::Gemma3;
  const bool qkv_bias = gemma ? c.attention_bias : true;
  const bool o_bias = gemma ? c.attention_bias : false;
  qkv_proj = register_module(
      "qkv_proj", Projection(c.hidden_size, (heads_ + 2 * kv_heads_) * head_dim_, qkv_bias, options));
  o_proj = register_module("o_proj", Projection(heads_ * head_dim_, c.hidden_size, o_bias, options));
  if (gemma) {
    q_norm = register_module("q_norm", RMSNorm(head_dim_, c.rms_norm_eps, true, options));
    k_norm = register_module("k_norm", RMSNorm(head_dim_, c.rms_norm_eps, true, options));
  }
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const AttentionMask& mask) const {
  const int64_t B = x.size(0), L = x.size(1), D = head_dim_;
  const int64_t H = heads_, K = kv_heads_;
  const auto parts = qkv_proj->forward(x).split({H * D, K * D, K * D}, -1);
  torch::Tensor q = parts[0].view({B, L, H, D});
  torch::Tensor k = parts[1].view({B, L, K, D});
  torch::Tensor v = parts[2].view({B, L, K, D});
  if (q_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  if (detail::fused_cpu_applies(q) && cos.scalar_type() == torch::kBFloat16) {
    q = detail::rotary_bf16(q, cos, sin);
    k = detail::rotary_bf16(k, cos, sin);
  } else {
    const torch::Tensor c = cos.view({1, L, 1, D});
    const torch::Tensor s = sin.view({1, L, 1, D});
    q = q * c + rotate_half(q) * s;
    k = k * c + rotate_half(k) * s;
  }

  // Under autocast SDPA runs in autocast's type whatever q's (float32 after
  // RoPE's float32 tables).
  const torch::ScalarType compute_type = x.is_cuda() && at::autocast::is_autocast_enabled(at::kCUDA)
                                             ? at::autocast::get_autocast_dtype(at::kCUDA)
                                             : q.scalar_type();
  const bool repeat_kv = detail::sdpa_repeats_kv(x.device(), mask, H, K, compute_type, [&] {
    return detail::sdpa_grouped_call_fused(q.transpose(1, 2), K, mask.causal, scale_, compute_type);
  });
  const detail::SdpaInputs in = detail::sdpa_inputs(q, k, v, mask, repeat_kv);
  const torch::Tensor out =
      at::scaled_dot_product_attention(in.q, in.k, in.v, in.mask, /*dropout_p=*/0.0, in.causal, scale_, in.enable_gqa);
  return o_proj->forward(out.transpose(1, 2).reshape({B, L, H * D}));
}

namespace detail {

bool host_mask_unpadded(const torch::Tensor& attention_mask) {
  if (!attention_mask.device().is_cpu() || attention_mask.numel() == 0) return false;
  const torch::Tensor mask = attention_mask.contiguous();
  const auto n = mask.numel();
  // A scan of the host memory: no tensor op, no scalar read-back.
  switch (mask.scalar_type()) {
    case torch::kLong: {
      const auto* p = mask.data_ptr<std::int64_t>();
      return std::none_of(p, p + n, [](std::int64_t v) { return v == 0; });
    }
    case torch::kInt: {
      const auto* p = mask.data_ptr<std::int32_t>();
      return std::none_of(p, p + n, [](std::int32_t v) { return v == 0; });
    }
    case torch::kBool: {
      const auto* p = mask.data_ptr<bool>();
      return std::none_of(p, p + n, [](bool v) { return !v; });
    }
    default:
      return false;
  }
}

bool sdpa_repeats_kv(const torch::Device& device, const AttentionMask& mask, std::int64_t heads,
                     std::int64_t kv_heads, torch::ScalarType compute_type,
                     const std::function<bool()>& grouped_call_fused) {
  if (!device.is_cuda() || kv_heads == heads) return false;
  const bool flash_dtype = compute_type == torch::kBFloat16 || compute_type == torch::kHalf;
  if (mask.allowed.defined() || !flash_dtype) return true;
  return !grouped_call_fused();
}

bool sdpa_grouped_call_fused(const torch::Tensor& q, std::int64_t kv_heads, bool causal, double scale,
                             torch::ScalarType compute_type) {
  // The choice reads dtypes, head sizes, strides' last dimension, the device's
  // capability and requires_grad, not the batch: one row keeps the probe small
  // (the caching allocator hands it out without a device call).
  const int64_t H = q.size(1), L = q.size(2), D = q.size(3);
  const auto options = q.options().dtype(compute_type);
  const torch::Tensor pq = torch::empty({1, H, L, D}, options).requires_grad_(q.requires_grad());
  const torch::Tensor pk = torch::empty({1, kv_heads, L, D}, options).requires_grad_(q.requires_grad());
  const torch::Tensor pv = torch::empty({1, kv_heads, L, D}, options).requires_grad_(q.requires_grad());
  const auto choice = at::_fused_sdp_choice(pq, pk, pv, std::nullopt, /*dropout_p=*/0.0, causal, scale,
                                            /*enable_gqa=*/true);
  return choice != static_cast<int64_t>(at::SDPBackend::math) && choice != static_cast<int64_t>(at::SDPBackend::error);
}

SdpaInputs sdpa_inputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const AttentionMask& mask, bool repeat_kv) {
  const int64_t H = q.size(2), K = k.size(2);
  SdpaInputs in;
  // [B, heads, L, D]; without repeating, the K key/value heads are shared by
  // H / K query heads each (enable_gqa) and stay K in memory.
  in.q = q.transpose(1, 2);
  in.k = k.transpose(1, 2);
  in.v = v.transpose(1, 2);
  if (mask.allowed.defined()) in.mask = mask.allowed;
  in.causal = mask.causal;
  in.enable_gqa = K != H;
  if (repeat_kv && K != H) {
    // Head h of the query uses key/value head h / (H / K), as enable_gqa does.
    in.k = in.k.repeat_interleave(H / K, /*dim=*/1);
    in.v = in.v.repeat_interleave(H / K, /*dim=*/1);
    in.enable_gqa = false;
  }
  return in;
}

}  // namespace detail

MlpImpl::MlpImpl(const ModelConfig& c, const torch::TensorOptions& options)
    : gelu_tanh_(c.hidden_activation == "gelu_pytorch_tanh") {
  gate_up_proj = register_module(
      "gate_up_proj", Projection(c.hidden_size, 2 * c.intermediate_size, false, options));
  down_proj = register_module("down_proj", Projection(c.intermediate_size, c.hidden_size, false, options));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) const {
  const torch::Tensor both = gate_up_proj->forward(x);
  if (!gelu_tanh_ && detail::fused_cpu_applies(both) && both.is_contiguous())
    return down_proj->forward(detail::silu_gate_bf16(both));
  const auto gate_up = both.chunk(2, -1);
  const torch::Tensor act = gelu_tanh_ ? torch::gelu(gate_up[0], "tanh") : torch::silu(gate_up[0]);
  return down_proj->forward(act * gate_up[1]);
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, std::int64_t layer,
                                   const torch::TensorOptions& options)
    : gemma_(c.architecture == Architecture::Gemma3),
      sliding_(c.layer_types.at(static_cast<std::size_t>(layer)) == LayerAttention::Sliding) {
  self_attn = register_module("self_attn", Attention(c, options));
  mlp = register_module("mlp", Mlp(c, options));
  const double eps = c.rms_norm_eps;
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, eps, gemma_, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, eps, gemma_, options));
  if (gemma_) {
    pre_feedforward_layernorm =
        register_module("pre_feedforward_layernorm", RMSNorm(c.hidden_size, eps, true, options));
    post_feedforward_layernorm =
        register_module("post_feedforward_layernorm", RMSNorm(c.hidden_size, eps, true, options));
  }
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                        const torch::Tensor& sin, const AttentionMask& mask) const {
  if (!gemma_) {
    torch::Tensor h = x + self_attn->forward(input_layernorm->forward(x), cos, sin, mask);
    return h + mlp->forward(post_attention_layernorm->forward(h));
  }
  torch::Tensor h = post_attention_layernorm->forward(
      self_attn->forward(input_layernorm->forward(x), cos, sin, mask));
  h = x + h;
  return h + post_feedforward_layernorm->forward(mlp->forward(pre_feedforward_layernorm->forward(h)));
}

std::pair<torch::Tensor, torch::Tensor> DecoderLayerImpl::forward_normed(const torch::Tensor& x,
                                                                         const torch::Tensor& x_normed,
                                                                         const torch::Tensor& cos,
                                                                         const torch::Tensor& sin,
                                                                         const AttentionMask& mask,
                                                                         const RMSNormImpl& next_norm) const {
  if (gemma_) throw InternalError("DecoderLayer::forward_normed is for pre-norm (Qwen2) layers");
  const auto [h, h_normed] = post_attention_layernorm->add_and_forward(x, self_attn->forward(x_normed, cos, sin, mask));
  return next_norm.add_and_forward(h, mlp->forward(h_normed));
}

// ---- the encoder -----------------------------------------------------------

EncoderImpl::EncoderImpl(ModelConfig config, AttentionMode attention,
                         const torch::TensorOptions& options)
    : config_(std::move(config)), attention_(attention) {
  validate_config(config_);
  const auto& c = config_;
  const bool gemma = c.architecture == Architecture::Gemma3;
  embed_tokens = register_module("embed_tokens", EmbeddingTable(c.vocab_size, c.hidden_size, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layer_list_.push_back(DecoderLayer(c, i, options));
    layers->push_back(layer_list_.back());
  }
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, gemma, options));
}

torch::ScalarType EncoderImpl::dtype() const { return embed_tokens->weight.scalar_type(); }
torch::Device EncoderImpl::device() const { return embed_tokens->weight.device(); }

void EncoderImpl::init_parameters(std::uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const bool gemma = config_.architecture == Architecture::Gemma3;
  for (auto& item : named_parameters()) {
    torch::Tensor& p = item.value();
    const std::string& name = item.key();
    torch::Tensor value;
    if (name.size() >= 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0) {
      value = gemma ? torch::zeros(p.sizes()) : torch::ones(p.sizes());
    } else if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      value = torch::zeros(p.sizes());
    } else {
      value = at::normal(0.0, 0.02, p.sizes(), gen);
    }
    p.copy_(value);
  }
}

std::pair<torch::Tensor, torch::Tensor> EncoderImpl::rope(std::int64_t length, double base,
                                                          double factor,
                                                          const torch::Device& device) const {
  // As transformers: inv_freq = 1 / base^(2i/D) in float32, divided by the
  // linear factor, times integer positions; cos/sin in float32.
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  const int64_t D = config_.head_dim;
  torch::Tensor exponent =
      torch::arange(0, D, 2, torch::TensorOptions().dtype(torch::kLong).device(device)).to(torch::kFloat) /
      static_cast<double>(D);
  torch::Tensor inv_freq = torch::pow(base, exponent).reciprocal();
  if (factor != 1.0) inv_freq = inv_freq / factor;
  const torch::Tensor freqs = torch::outer(torch::arange(length, f32), inv_freq);  // [L, D/2]
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

torch::Tensor EncoderImpl::attention_allowed(const torch::Tensor& attention_mask, bool sliding) const {
  const torch::Tensor valid = attention_mask.ne(0);
  const int64_t B = valid.size(0), L = valid.size(1);
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(valid.device());
  const torch::Tensor pos = torch::arange(L, long_opts);
  const torch::Tensor i = pos.view({L, 1});  // query
  const torch::Tensor j = pos.view({1, L});  // key
  torch::Tensor allowed = valid.view({B, 1, 1, L});
  const auto window = config_.attention_window(attention_);
  if (attention_ == AttentionMode::Causal) {
    torch::Tensor rel = j <= i;
    if (sliding && window) rel = rel & ((i - j) < *window);
    allowed = allowed & rel;
  } else if (sliding && window) {
    allowed = allowed & ((i - j).abs() < *window);
  }
  // A padded query row whose window holds no real token would see nothing at
  // all, and softmax over nothing is NaN: it attends to itself instead. Its
  // output is never pooled; real rows always see at least themselves.
  return (allowed | (i == j)).expand({B, 1, L, L});
}

AttentionMask EncoderImpl::attention_mask_for(const torch::Tensor& attention_mask, bool sliding,
                                              bool unpadded) const {
  const int64_t L = attention_mask.size(1);
  const auto window = config_.attention_window(attention_);
  const bool window_applies = sliding && window && *window < L;
  if (!window_applies && attention_ == AttentionMode::Causal) return {torch::Tensor(), true};
  if (!window_applies && unpadded) return {torch::Tensor(), false};  // every key of every row is real
  if (!window_applies) {
    // Bidirectional: only the padding keys go. A row that is all padding (which
    // pooling refuses) may see every key, so that no row is empty.
    const torch::Tensor valid = attention_mask.ne(0);
    const torch::Tensor keys = valid | valid.any(1, /*keepdim=*/true).logical_not();
    return {keys.view({valid.size(0), 1, 1, L}), false};
  }
  return {attention_allowed(attention_mask, sliding), false};
}

torch::Tensor EncoderImpl::forward(const torch::Tensor& input_ids,
                                   const torch::Tensor& attention_mask) const {
  return forward_from_embeddings(embed_tokens->forward(checked_input_ids(input_ids, attention_mask)), attention_mask);
}

torch::Tensor EncoderImpl::checked_input_ids(const torch::Tensor& input_ids,
                                             const torch::Tensor& attention_mask) const {
  if (input_ids.dim() != 2 || attention_mask.sizes() != input_ids.sizes())
    throw UsageError("model input: input_ids " + shape_str(input_ids.sizes()) + " and attention_mask " +
                     shape_str(attention_mask.sizes()) + " must both be [batch, length]");
  if (!c10::isIntegralType(input_ids.scalar_type(), /*includeBool=*/false))
    throw UsageError(std::string("model input: input_ids must be integers, got ") +
                     c10::toString(input_ids.scalar_type()));
  const int64_t B = input_ids.size(0), L = input_ids.size(1);
  if (B == 0 || L == 0) throw UsageError("model input: empty batch " + shape_str(input_ids.sizes()));
  const torch::Device dev = device();

  // Checked where the ids are: ids still on the host (kalm's embedding engine
  // passes them so) cost the device nothing; ids already on the device one
  // host synchronisation for all checks. Padding positions hold any id.
  const torch::Tensor valid = attention_mask.to(input_ids.device()).ne(0);
  const torch::Tensor ids = input_ids.to(torch::kLong);
  const torch::Tensor real = ids.masked_fill(valid.logical_not(), 0);
  const torch::Tensor checks =
      torch::stack({(real < 0).any(), (real >= config_.vocab_size).any(),
                    (valid.narrow(1, 1, L - 1) & valid.narrow(1, 0, L - 1).logical_not()).any()})
          .cpu();
  const bool* bad = checks.data_ptr<bool>();
  if (bad[0] || bad[1]) {
    const torch::Tensor out_of_range = ((real < 0) | (real >= config_.vocab_size)).nonzero();
    const int64_t row = out_of_range.index({0, 0}).item<int64_t>();
    const int64_t col = out_of_range.index({0, 1}).item<int64_t>();
    // Ids the tokenizer produced that the model has no row for: the two do not belong together.
    throw ModelError("model input: token id " + std::to_string(real.index({row, col}).item<int64_t>()) +
                     " at sequence " + std::to_string(row) + ", position " + std::to_string(col) +
                     " is outside the vocabulary [0, " + std::to_string(config_.vocab_size) + ")");
  }
  if (bad[2])
    throw UsageError("model input: attention_mask is not right-padded (a token follows padding); "
                     "kalm pads on the right so that positions start at 0");
  // Uploaded without blocking (the source is pinned where the engine made it
  // so); padding ids become 0 on the device, where the lookup reads them.
  const torch::Tensor on_device = ids.to(dev, /*non_blocking=*/true);
  return on_device.masked_fill(attention_mask.to(dev, /*non_blocking=*/true).eq(0), 0);
}

torch::Tensor EncoderImpl::forward_from_embeddings(const torch::Tensor& token_embeddings,
                                                   const torch::Tensor& attention_mask,
                                                   std::optional<bool> unpadded_known) const {
  // One model call, as LibTorch's profiler (and bench/train's counter) sees it.
  RECORD_USER_SCOPE("kalm::encoder_call");
  if (token_embeddings.dim() != 3 || attention_mask.dim() != 2 ||
      token_embeddings.size(0) != attention_mask.size(0) || token_embeddings.size(1) != attention_mask.size(1) ||
      token_embeddings.size(2) != config_.hidden_size)
    throw UsageError("model input: token embeddings " + shape_str(token_embeddings.sizes()) + " and attention_mask " +
                     shape_str(attention_mask.sizes()) + " must be [batch, length, " +
                     std::to_string(config_.hidden_size) + "] and [batch, length]");
  const int64_t L = token_embeddings.size(1);
  const torch::Device dev = device();
  const torch::ScalarType dt = dtype();
  const torch::Tensor valid = attention_mask.to(dev, /*non_blocking=*/true).ne(0);
  torch::Tensor h = token_embeddings;
  if (config_.scales_embeddings()) {
    // sqrt(hidden) rounded to float32, then to the compute dtype, as transformers.
    const float scale = static_cast<float>(std::sqrt(static_cast<double>(config_.hidden_size)));
    h = h * torch::scalar_tensor(scale, torch::TensorOptions().dtype(torch::kFloat).device(dev)).to(dt);
  }

  // Without layers there is nothing to attend: skip the RoPE tables and the
  // [B, 1, L, L] masks (a 0-layer model is the default experiment's hot path).
  if (layer_list_.empty()) return norm->forward(h);

  const bool gemma = config_.architecture == Architecture::Gemma3;
  auto global = rope(L, config_.rope_theta, config_.rope_scaling.factor, dev);
  torch::Tensor cos_global = global.first.to(dt), sin_global = global.second.to(dt);
  torch::Tensor cos_local, sin_local;
  AttentionMask mask_local;
  // A GPU batch without padding needs no key mask, so flash attention (which
  // takes none) applies to bidirectional layers too. Known from the host copy
  // of the mask that kalm's engine passes, or told by the caller (training's
  // calls, whose masks are already on the device); on the CPU the masked call stays.
  const bool unpadded =
      dev.is_cuda() && (unpadded_known ? *unpadded_known : detail::host_mask_unpadded(attention_mask));
  const AttentionMask mask_full = attention_mask_for(valid, false, unpadded);
  bool any_sliding = false;
  for (const auto& layer : layer_list_) any_sliding = any_sliding || layer->sliding();
  if (gemma && any_sliding) {
    auto local = rope(L, config_.rope_local_base_freq, config_.rope_local_scaling.factor, dev);
    cos_local = local.first.to(dt);
    sin_local = local.second.to(dt);
    mask_local = attention_mask_for(valid, true, unpadded);
  }
  if (!gemma && norm->fused_applies(h)) {
    // Pre-norm layers with each residual add fused into the norm that reads
    // its sum (the next layer's input norm, or the final norm): the same
    // arithmetic as the loop below, one pass over h fewer per add.
    torch::Tensor normed = layer_list_.front()->input_layernorm->forward(h);
    for (std::size_t i = 0; i < layer_list_.size(); ++i) {
      const auto& layer = layer_list_[i];
      const RMSNormImpl& next = i + 1 < layer_list_.size() ? *layer_list_[i + 1]->input_layernorm : *norm;
      std::tie(h, normed) = layer->sliding() ? layer->forward_normed(h, normed, cos_local, sin_local, mask_local, next)
                                             : layer->forward_normed(h, normed, cos_global, sin_global, mask_full, next);
    }
    return normed;
  }
  for (const auto& layer : layer_list_) {
    if (layer->sliding())
      h = layer->forward(h, cos_local, sin_local, mask_local);
    else
      h = layer->forward(h, cos_global, sin_global, mask_full);
  }
  return norm->forward(h);
}

torch::Tensor EncoderImpl::embed(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                 Pooling pooling, bool normalize, std::optional<std::int64_t> dim) const {
  torch::Tensor pooled = pool(forward(input_ids, attention_mask), attention_mask, pooling);
  if (dim) return matryoshka(pooled, *dim);
  return normalize ? l2_normalize(pooled) : pooled;
}

// ---- transformers' names ---------------------------------------------------

std::vector<HfTensorSpec> EncoderImpl::hf_tensor_specs() const {
  const auto& c = config_;
  const bool gemma = c.architecture == Architecture::Gemma3;
  const bool qkv_bias = gemma ? c.attention_bias : true;
  const bool o_bias = gemma && c.attention_bias;
  const int64_t Hd = c.hidden_size, D = c.head_dim, q = c.num_attention_heads * D,
                kv = c.num_key_value_heads * D, I = c.intermediate_size;
  std::vector<HfTensorSpec> specs;
  specs.push_back({"embed_tokens.weight", {c.vocab_size, Hd}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    specs.push_back({p + "self_attn.q_proj.weight", {q, Hd}});
    if (qkv_bias) specs.push_back({p + "self_attn.q_proj.bias", {q}});
    specs.push_back({p + "self_attn.k_proj.weight", {kv, Hd}});
    if (qkv_bias) specs.push_back({p + "self_attn.k_proj.bias", {kv}});
    specs.push_back({p + "self_attn.v_proj.weight", {kv, Hd}});
    if (qkv_bias) specs.push_back({p + "self_attn.v_proj.bias", {kv}});
    specs.push_back({p + "self_attn.o_proj.weight", {Hd, q}});
    if (o_bias) specs.push_back({p + "self_attn.o_proj.bias", {Hd}});
    if (gemma) {
      specs.push_back({p + "self_attn.q_norm.weight", {D}});
      specs.push_back({p + "self_attn.k_norm.weight", {D}});
    }
    specs.push_back({p + "mlp.gate_proj.weight", {I, Hd}});
    specs.push_back({p + "mlp.up_proj.weight", {I, Hd}});
    specs.push_back({p + "mlp.down_proj.weight", {Hd, I}});
    specs.push_back({p + "input_layernorm.weight", {Hd}});
    specs.push_back({p + "post_attention_layernorm.weight", {Hd}});
    if (gemma) {
      specs.push_back({p + "pre_feedforward_layernorm.weight", {Hd}});
      specs.push_back({p + "post_feedforward_layernorm.weight", {Hd}});
    }
  }
  specs.push_back({"norm.weight", {Hd}});
  return specs;
}

void EncoderImpl::load_hf_tensors(const std::map<std::string, torch::Tensor>& tensors,
                                  const std::string& source,
                                  const std::function<void(const std::string&)>& copied) {
  for (const auto& spec : hf_tensor_specs()) {
    auto it = tensors.find(spec.name);
    if (it == tensors.end() || !it->second.defined())
      throw ModelError(display_name(source) + ": missing tensor '" + spec.name + "' (expected shape " +
                       shape_str(spec.shape) + ")");
    if (it->second.sizes() != torch::IntArrayRef(spec.shape))
      throw ModelError(display_name(source) + ": tensor '" + spec.name + "' has shape " +
                       shape_str(it->second.sizes()) + ", expected " + shape_str(spec.shape));
    if (!torch::isFloatingType(it->second.scalar_type()))
      throw ModelError(display_name(source) + ": tensor '" + spec.name + "' has non-floating dtype " +
                       c10::toString(it->second.scalar_type()));
  }
  torch::NoGradGuard no_grad;
  auto get = [&](const std::string& name) -> const torch::Tensor& { return tensors.at(name); };
  // Every source tensor is copied once; `copied` hears of it right after.
  auto copy_into = [&](torch::Tensor dst, const std::string& name) {
    const torch::Tensor& src = get(name);
    // The same storage (a parameter that already aliases its source) needs no copy.
    const bool aliased = dst.data_ptr() == src.data_ptr() && dst.scalar_type() == src.scalar_type();
    // A blocking host-to-GPU copy_ that changes the dtype converts on the host
    // first: a whole host temporary of the target dtype per tensor (4 GB for a
    // Gemma3-12B embedding read as float32). Uploaded as stored and converted
    // on the GPU instead.
    const bool convert_on_gpu = dst.is_cuda() && dst.scalar_type() != src.scalar_type();
    if (!aliased) dst.copy_(convert_on_gpu ? src.to(dst.device()) : src);
    if (copied) copied(name);
  };
  auto fuse = [&](torch::Tensor& dst, std::initializer_list<std::string> names) {
    int64_t row = 0;
    for (const auto& n : names) {
      const int64_t rows = get(n).size(0);
      copy_into(dst.narrow(0, row, rows), n);
      row += rows;
    }
  };
  copy_into(embed_tokens->weight, "embed_tokens.weight");
  const bool gemma = config_.architecture == Architecture::Gemma3;
  for (std::size_t i = 0; i < layer_list_.size(); ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    auto& layer = layer_list_[i];
    auto& attn = layer->self_attn;
    fuse(attn->qkv_proj->weight,
         {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"});
    if (attn->qkv_proj->bias.defined())
      fuse(attn->qkv_proj->bias,
           {p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias"});
    copy_into(attn->o_proj->weight, p + "self_attn.o_proj.weight");
    if (attn->o_proj->bias.defined()) copy_into(attn->o_proj->bias, p + "self_attn.o_proj.bias");
    if (gemma) {
      copy_into(attn->q_norm->weight, p + "self_attn.q_norm.weight");
      copy_into(attn->k_norm->weight, p + "self_attn.k_norm.weight");
    }
    fuse(layer->mlp->gate_up_proj->weight, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"});
    copy_into(layer->mlp->down_proj->weight, p + "mlp.down_proj.weight");
    copy_into(layer->input_layernorm->weight, p + "input_layernorm.weight");
    copy_into(layer->post_attention_layernorm->weight, p + "post_attention_layernorm.weight");
    if (gemma) {
      copy_into(layer->pre_feedforward_layernorm->weight, p + "pre_feedforward_layernorm.weight");
      copy_into(layer->post_feedforward_layernorm->weight, p + "post_feedforward_layernorm.weight");
    }
  }
  copy_into(norm->weight, "norm.weight");
}

std::vector<std::pair<std::string, torch::Tensor>> EncoderImpl::hf_tensors() const {
  const auto& c = config_;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim,
                I = c.intermediate_size;
  const bool gemma = c.architecture == Architecture::Gemma3;
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.emplace_back("embed_tokens.weight", embed_tokens->weight.detach());
  for (std::size_t i = 0; i < layer_list_.size(); ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    const auto& layer = layer_list_[i];
    const auto& attn = layer->self_attn;
    const auto w = attn->qkv_proj->weight.detach().split({q, kv, kv}, 0);
    const bool has_bias = attn->qkv_proj->bias.defined();
    std::vector<torch::Tensor> b;
    if (has_bias) b = attn->qkv_proj->bias.detach().split({q, kv, kv}, 0);
    const char* names[] = {"q", "k", "v"};
    for (int j = 0; j < 3; ++j) {
      out.emplace_back(p + "self_attn." + names[j] + "_proj.weight", w[j]);
      if (has_bias) out.emplace_back(p + "self_attn." + names[j] + "_proj.bias", b[j]);
    }
    out.emplace_back(p + "self_attn.o_proj.weight", attn->o_proj->weight.detach());
    if (attn->o_proj->bias.defined())
      out.emplace_back(p + "self_attn.o_proj.bias", attn->o_proj->bias.detach());
    if (gemma) {
      out.emplace_back(p + "self_attn.q_norm.weight", attn->q_norm->weight.detach());
      out.emplace_back(p + "self_attn.k_norm.weight", attn->k_norm->weight.detach());
    }
    const auto gu = layer->mlp->gate_up_proj->weight.detach().split({I, I}, 0);
    out.emplace_back(p + "mlp.gate_proj.weight", gu[0]);
    out.emplace_back(p + "mlp.up_proj.weight", gu[1]);
    out.emplace_back(p + "mlp.down_proj.weight", layer->mlp->down_proj->weight.detach());
    out.emplace_back(p + "input_layernorm.weight", layer->input_layernorm->weight.detach());
    out.emplace_back(p + "post_attention_layernorm.weight", layer->post_attention_layernorm->weight.detach());
    if (gemma) {
      out.emplace_back(p + "pre_feedforward_layernorm.weight", layer->pre_feedforward_layernorm->weight.detach());
      out.emplace_back(p + "post_feedforward_layernorm.weight",
                       layer->post_feedforward_layernorm->weight.detach());
    }
  }
  out.emplace_back("norm.weight", norm->weight.detach());
  return out;
}

torch::ScalarType parse_compute_dtype(const std::string& name) {
  // tf32 keeps float32 tensors; enable_tf32 (device.h) switches the matmuls.
  if (name == "f32" || name == "float32" || name == "tf32") return torch::kFloat;
  if (name == "bf16" || name == "bfloat16") return torch::kBFloat16;
  throw UsageError("unknown compute dtype \"" + name + "\" (choose f32, tf32 or bf16)");
}

}  // namespace kalm::model
