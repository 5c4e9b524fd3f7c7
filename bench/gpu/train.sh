#!/usr/bin/env bash
# kalm-train on a GPU against the GPU's own bf16 matmul rate, measured in the
# same run, for issue 14's shapes: a random Qwen2-0.5B-shaped model (896
# hidden, 24 layers, 14 heads, 2 KV heads, FFN 4864, vocabulary 151,936), bf16
# autocast, groups of 1 query + 1 positive + 7 hard negatives of 10-40 words,
#   (1) --batch-size 32
#   (2) --batch-size 256 --grad-cache (chunks of --call-tokens' GPU default)
# a one-rank NCCL group against the plain run (same bytes; tokens/s with and
# without the collectives), and a CUDA resume check: 6 steps straight vs 3
# steps + --resume, compared byte for byte (--deterministic, the default).
#
#   bench/gpu/train.sh BUILD_DIR PYTHON [OUT_DIR]
#   DEVICE=cpu LAYERS=2 VOCAB=32000 bench/gpu/train.sh ...   # the CPU dry run
#
# PYTHON is a Python with the CUDA torch that kalm was built against (it
# measures the matmul rate). Prints per run the median tokens/s over steps
# 3..N (the metrics' tokens_per_s), the bound 6 x non-embedding parameters per
# token at the measured bf16 matmul rate, and the share of it. ~5 minutes on
# an H100/H200.
set -euo pipefail
build=${1:?build directory}; py=${2:?python with CUDA torch}; out=${3:-$(mktemp -d)}
train=$build/tools/kalm-train
mkdir -p "$out"
# A second run into the same folder starts afresh (kalm-train would resume).
rm -rf "$out"/{tok,b32,b256,full,part,plain,nccl1,nccl1-flat,nccl2} "$out"/trace-*.json
# scripts/gpu-check.sh --cpu runs the same steps on the CPU with a small model
# (fewer layers, a smaller vocabulary, fewer steps, Gloo for NCCL) to check them.
device=${DEVICE:-cuda}; layers=${LAYERS:-24}; vocab=${VOCAB:-151936}
if [ "$device" = cuda ]; then
  dist=nccl gemm_n=8192 steps_b32=25 steps_b256=8 steps_dist=10 big=256
else
  # (batch 64 for the GradCache run: 256 took over its 300 s on an Intel Xeon
  # without AMX, whose bf16 products are slow)
  dist=gloo gemm_n=1024 steps_b32=6 steps_b256=3 steps_dist=4 big=64
fi

# (a) the device's bf16 matmul rate: N^3 (8192 on a GPU), best of 20 after warm-up.
"$py" - "$device" "$gemm_n" <<'PY' | tee "$out/gemm.txt"
import sys, time, torch
device, n = sys.argv[1], int(sys.argv[2])
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
for _ in range(5): a @ b
sync()
best = 0.0
for _ in range(20):
    t = time.perf_counter(); a @ b; sync(); dt = time.perf_counter() - t
    best = max(best, 2 * n ** 3 / dt)
print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
print(f"gemm_tflops_bf16 {best / 1e12:.3f}")
PY
gemm=$(awk '/^gemm_tflops_bf16/{print $2}' "$out/gemm.txt")

# Data: 4,096 groups, texts of 10-40 words from a fixed seed.
awk -v n=4096 -v seed=7 'BEGIN {
  srand(seed); split("ka lo mi ne su ta ri po ve da ghe stra nu bel or an is ke tu", syl, " ")
  for (v = 1; v <= 20000; v++) { w = ""; k = 1 + int(rand() * 3); for (j = 0; j <= k; j++) w = w syl[1 + int(rand() * 20)]; vocab[v] = w }
  for (i = 0; i < n; i++) {
    printf "{\"query\": \"%s\", \"pos\": [\"%s\"], \"neg\": [", t(), t()
    for (j = 0; j < 7; j++) printf "%s\"%s\"", (j ? ", " : ""), t()
    printf "]}\n"
  }
}
function t(   m, s, j) { m = 10 + int(rand() * 31); s = vocab[1 + int(rand() * 20000)]; for (j = 1; j < m; j++) s = s " " vocab[1 + int(rand() * 20000)]; return s }' >"$out/train.jsonl"
cat >"$out/qwen2-0.5b.json" <<JSON
{"architectures": ["Qwen2Model"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 896,
 "intermediate_size": 4864, "num_attention_heads": 14, "num_key_value_heads": 2, "num_hidden_layers": $layers,
 "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true,
 "use_sliding_window": false, "is_causal": false, "vocab_size": $vocab, "torch_dtype": "float32"}
JSON
# Non-embedding parameters: per layer q/o 896x896, k/v 896x128 (+ biases),
# MLP 3 x 896 x 4864, two norms; plus the final norm.
params=$(awk -v L="$layers" 'BEGIN { h = 896; kv = 128; f = 4864; layer = 2 * h * h + 2 * h * kv + h + 2 * kv + 3 * h * f + 2 * h; print L * layer + h }')

# A byte-level BPE of 32,000 tokens trained on the data once (CPU), shared by the runs.
timeout 300 "$train" "$out/train.jsonl" --init-config "$out/qwen2-0.5b.json" --train-tokenizer 32000 \
  --max-steps 1 --batch-size 8 --num-negatives 7 -q -o "$out/tok" >/dev/null

common=(--init-config "$out/qwen2-0.5b.json" --tokenizer "$out/tok" --num-negatives 7 --device "$device" --dtype bf16
        --query-max-length 64 --passage-max-length 64 --warmup-steps 2 --lr 1e-5 -q)
median_tps() {  # METRICS: median tokens_per_s of steps 3..N
  sed -E 's/.*"tokens_per_s": ([0-9.e+]+).*/\1/' "$1" | tail -n +3 | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
report() {  # NAME METRICS
  local tps; tps=$(median_tps "$2")
  awk -v n="$1" -v t="$tps" -v g="$gemm" -v p="$params" 'BEGIN {
    b = g * 1e12 / (6 * p)
    printf "%s: %.0f tokens/s, bound %.0f tokens/s (%.4g TFLOP/s bf16 / (6 x %d params)), share %.2f\n", n, t, b, g, p, t / b }'
}

# One late step of this run is recorded by LibTorch's profiler (--profile): the
# trace shows where a step's time goes on the device (no Nsight Systems there).
# Its slower step is one of the median's 20-odd.
timeout 240 "$train" "$out/train.jsonl" "${common[@]}" --batch-size 32 --max-steps "$steps_b32" -o "$out/b32" \
  --metrics "$out/b32.jsonl" --profile "$out/trace-train-b32.json" --profile-steps $((steps_b32 - 3))
report "batch 32" "$out/b32.jsonl"
echo "profile: $(wc -c <"$out/trace-train-b32.json") bytes of Chrome trace of step $((steps_b32 - 3)) (batch 32) in $out/trace-train-b32.json"
timeout 300 "$train" "$out/train.jsonl" "${common[@]}" --batch-size "$big" --grad-cache --max-steps "$steps_b256" \
  -o "$out/b256" --metrics "$out/b256.jsonl"
report "batch $big, --grad-cache" "$out/b256.jsonl"

# Resume on the device: the same bytes as the uninterrupted run (before the
# NCCL runs: a difference is a failure of the check, reported at the end).
timeout 120 "$train" "$out/train.jsonl" "${common[@]}" --batch-size 16 --max-steps 6 --save-steps 3 -o "$out/full"
timeout 120 "$train" "$out/train.jsonl" "${common[@]}" --batch-size 16 --max-steps 6 --save-steps 3 -o "$out/part" \
  --stop-at-step 3
timeout 120 "$train" "$out/train.jsonl" "${common[@]}" --batch-size 16 --max-steps 6 --save-steps 3 -o "$out/part" \
  --resume
if cmp -s "$out/full/model.safetensors" "$out/part/model.safetensors"; then
  echo "$device resume: bit-identical (6 steps vs 3 + resume)"
else
  echo "$device resume: DIFFERENT weights"
  resume_failed=1
fi

# Issue 16: a one-rank NCCL group (all-gather and all-reduce on the GPU; Gloo in
# the CPU dry run) gives the same weights as the plain run, and what the
# collectives cost per step.
timeout 180 "$train" "$out/train.jsonl" "${common[@]}" --batch-size 32 --max-steps "$steps_dist" -o "$out/plain" \
  --metrics "$out/plain.jsonl"
timeout 180 "$train" "$out/train.jsonl" "${common[@]}" --batch-size 32 --max-steps "$steps_dist" -o "$out/nccl1" \
  --metrics "$out/nccl1.jsonl" --dist-backend "$dist"
if cmp -s "$out/plain/model.safetensors" "$out/nccl1/model.safetensors"; then
  echo "$dist world size 1: bit-identical to the plain run"
else
  echo "$dist world size 1: DIFFERENT weights from the plain run"
fi
timeout 180 "$train" "$out/train.jsonl" "${common[@]}" --batch-size 32 --max-steps "$steps_dist" -o "$out/nccl1-flat" \
  --metrics "$out/nccl1-flat.jsonl" --dist-backend "$dist" --grad-bucket-mb 0
if cmp -s "$out/plain/model.safetensors" "$out/nccl1-flat/model.safetensors"; then
  echo "$dist world size 1, one flat all-reduce: bit-identical to the plain run"
else
  echo "$dist world size 1, one flat all-reduce: DIFFERENT weights from the plain run"
fi
report "batch 32, plain" "$out/plain.jsonl"
report "batch 32, one-rank $dist group, 25 MiB buckets during backward" "$out/nccl1.jsonl"
report "batch 32, one-rank $dist group, one flat all-reduce after backward" "$out/nccl1-flat.jsonl"
echo "buckets launched during backward (last step): $(tail -1 "$out/nccl1.jsonl" | grep -o '"grad_buckets": [0-9]*, "grad_buckets_in_backward": [0-9]*')"
# Two GPUs or more: 2 ranks x batch 16 against 1 rank x batch 32 (same global batch).
gpus=$("$py" -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -ge 2 ]; then
  torchrun=$(dirname "$py")/torchrun
  timeout 240 "$torchrun" --no-python --standalone --nproc-per-node 2 "$train" "$out/train.jsonl" "${common[@]}" \
    --batch-size 16 --max-steps "$steps_dist" -o "$out/nccl2" --metrics "$out/nccl2.jsonl"
  report "batch 2 x 16, two ranks over NCCL" "$out/nccl2.jsonl"
else
  echo "one GPU: no 2-rank run"
fi
exit "${resume_failed:-0}"
