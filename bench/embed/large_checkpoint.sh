#!/usr/bin/env bash
# bench/embed/large_checkpoint.sh: host memory of kalm-embed on a multi-GB
# sharded bf16 checkpoint (issue 15: resident memory at most the file's size on
# CPU). Generates a random Qwen2 checkpoint of the given shape as bf16 safetensors
# shards (<= 2 GB each, with model.safetensors.index.json) with the project's
# Python (torch + safetensors from PyPI), embeds 64 short texts with --dtype bf16
# and --dtype f32, and prints peak RSS (/usr/bin/time -v) against the
# checkpoint's size.
#   bench/embed/large_checkpoint.sh BUILD_DIR [HIDDEN LAYERS FFN] [KALM_EMBED...]
# Default shape: 2048 hidden, 24 layers, FFN 11008, vocab 151936 (2.2B
# parameters, 4.3 GB in bf16). Extra arguments name other kalm-embed binaries
# to measure the same way (e.g. an older build, for a before/after).
set -euo pipefail
build=${1:-build}; hidden=${2:-2048}; layers=${3:-24}; ffn=${4:-11008}
shift $(( $# < 4 ? $# : 4 ))
src=$(cd "$(dirname "$0")/../.." && pwd)
python=${KALM_PYTHON:-$src/.venv/bin/python}
dir=$(mktemp -d "${TMPDIR:-/tmp}/kalm-large-ckpt.XXXXXX"); trap 'rm -rf "$dir"' EXIT
"$python" - "$dir/model" "$hidden" "$layers" "$ffn" <<'PY'
import json, os, sys, torch
from safetensors.torch import save_file
out, h, L, ffn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
heads, kv, vocab = h // 128, 2, 151936
os.makedirs(out)
json.dump({"architectures": ["Qwen2Model"], "model_type": "qwen2", "hidden_size": h, "num_hidden_layers": L,
           "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": ffn,
           "vocab_size": vocab, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
           "hidden_act": "silu", "tie_word_embeddings": True, "torch_dtype": "bfloat16"},
          open(f"{out}/config.json", "w"))
g = torch.Generator().manual_seed(0)
def w(*shape): return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
hd = h // heads
tensors = [("embed_tokens.weight", lambda: w(vocab, h)), ("norm.weight", lambda: torch.ones(h, dtype=torch.bfloat16))]
for i in range(L):
    p = f"layers.{i}."
    tensors += [(p + "self_attn.q_proj.weight", lambda: w(heads * hd, h)), (p + "self_attn.q_proj.bias", lambda: w(heads * hd)),
                (p + "self_attn.k_proj.weight", lambda: w(kv * hd, h)), (p + "self_attn.k_proj.bias", lambda: w(kv * hd)),
                (p + "self_attn.v_proj.weight", lambda: w(kv * hd, h)), (p + "self_attn.v_proj.bias", lambda: w(kv * hd)),
                (p + "self_attn.o_proj.weight", lambda: w(h, heads * hd)),
                (p + "mlp.gate_proj.weight", lambda: w(ffn, h)), (p + "mlp.up_proj.weight", lambda: w(ffn, h)),
                (p + "mlp.down_proj.weight", lambda: w(h, ffn)),
                (p + "input_layernorm.weight", lambda: torch.ones(h, dtype=torch.bfloat16)),
                (p + "post_attention_layernorm.weight", lambda: torch.ones(h, dtype=torch.bfloat16))]
shards, cur, size, total = [], {}, 0, 0
for name, make in tensors:
    t = make(); n = t.numel() * 2
    if cur and size + n > 2_000_000_000:
        shards.append(cur); cur, size = {}, 0
    cur[name] = t; size += n; total += n
shards.append(cur)
index = {"metadata": {"total_size": total}, "weight_map": {}}
for k, shard in enumerate(shards):
    fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, f"{out}/{fname}", metadata={"format": "pt"})
    for name in shard: index["weight_map"][name] = fname
json.dump(index, open(f"{out}/model.safetensors.index.json", "w"))
print(f"checkpoint: {len(shards)} shards, {total / 1e9:.2f} GB of bf16 weights")
PY
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/"tokenizer*.json "$dir/model/"
for i in $(seq 64); do echo "text number $i about embedding large checkpoints in little memory"; done > "$dir/texts.txt"
file_mb=$(du -sm --apparent-size "$dir/model" | cut -f1)
echo "checkpoint_mb $file_mb"
for exe in "$build/tools/kalm-embed" "$@"; do
  for dtype in bf16 f32; do
    /usr/bin/time -v "$exe" -q -m "$dir/model" --input-format text --dtype "$dtype" "$dir/texts.txt" \
      -o "$dir/out.safetensors" 2> "$dir/time.txt"
    rss_mb=$(awk '/Maximum resident set size/{print int($6 / 1024)}' "$dir/time.txt")
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$dir/time.txt")
    awk -v e="$exe" -v d="$dtype" -v r="$rss_mb" -v f="$file_mb" -v s="$secs" \
      'BEGIN { printf "%s --dtype %s: peak_rss_mb %d (%.2f x the checkpoint), wall %s\n", e, d, r, r / f, s }'
  done
done
