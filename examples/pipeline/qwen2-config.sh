#!/usr/bin/env bash
# qwen2-config.sh LAYERS HIDDEN HEADS KV_HEADS INTERMEDIATE VOCAB MAX_POSITIONS:
# print a Qwen2 config.json (transformers' Qwen2Model) for a from-scratch model.
# is_causal false: kalm runs it with bidirectional attention (KaLM V2); the
# vocabulary is replaced by the tokenizer's when kalm-train trains one.
set -euo pipefail
if [ $# -ne 7 ]; then
  echo "usage: qwen2-config.sh LAYERS HIDDEN HEADS KV_HEADS INTERMEDIATE VOCAB MAX_POSITIONS" >&2
  exit 2
fi
for v in "$@"; do
  case $v in '' | *[!0-9]*) echo "qwen2-config.sh: '$v' is not a non-negative integer" >&2; exit 2 ;; esac
done
cat <<JSON
{
  "architectures": ["Qwen2Model"],
  "model_type": "qwen2",
  "hidden_act": "silu",
  "num_hidden_layers": $1,
  "hidden_size": $2,
  "num_attention_heads": $3,
  "num_key_value_heads": $4,
  "intermediate_size": $5,
  "vocab_size": $6,
  "max_position_embeddings": $7,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "use_sliding_window": false,
  "is_causal": false,
  "torch_dtype": "float32"
}
JSON
