#!/usr/bin/env bash
# bench/train: kalm-train's training throughput against the f32 GEMM bound
# measured in the same run, and its peak memory as the contrastive batch grows
# 16x under GradCache.
#   bench/train/run.sh BUILD_DIR [THREADS]
# (a) gemm_gflops_f32: kalm-bench-train (bench/embed's GEMM shape)
# (b) tokens/s of kalm-train on a random 4-layer x 256 Qwen2, 64-token texts
#     (no padding), batch 32 x (query + pos + 3 neg), plain backward; bound =
#     GEMM rate / (6 x non-embedding params) tokens/s (forward 2, backward 4
#     flops per weight per token; attention's L^2 term left out, ~6% here)
# (c) peak RSS (/usr/bin/time -v) of one pretrain step at batch 256 and 4096
#     with --grad-cache-chunk 64, same model, 16-token texts (in-batch
#     negatives only: 2B texts per step)
# (d) per optimiser step, counted by LibTorch's RecordFunction
#     (kalm-bench-train-calls, bench/train/count_calls.cpp): scalar read-backs
#     (.item(); each a host sync on a GPU), model calls (embedding lookups) and
#     cross-device copies, at (b)'s shape and at batch 256 with GradCache in
#     chunks of 64 texts (--grad-cache-chunk 64) and of 16384 tokens
#     (--grad-cache), all with --call-tokens 16384 (the default on a GPU,
#     where these counts matter); the difference of two runs, so set-up is
#     left out
# Data: word salad from a fixed seed (awk), no downloads. ~7 minutes on 2 cores.
set -euo pipefail
build=${1:-build}; threads=${2:-$(nproc)}
train=$build/tools/kalm-train
helper=$build/bench/train/kalm-bench-train
counter=$build/bench/train/kalm-bench-train-calls
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT

# gen N WORDS SEED: N groups {query, pos[1], neg[3]}, every text WORDS words.
gen() {
  awk -v n="$1" -v words="$2" -v seed="$3" 'BEGIN {
    srand(seed); split("ka lo mi ne su ta ri po ve da ghe stra nu bel or an is ke tu", syl, " ")
    for (v = 1; v <= 3000; v++) { w = ""; k = 1 + int(rand() * 3); for (j = 0; j <= k; j++) w = w syl[1 + int(rand() * 20)]; vocab[v] = w }
    for (i = 0; i < n; i++) {
      printf "{\"query\": \"%s\", \"pos\": [\"%s\"], \"neg\": [\"%s\", \"%s\", \"%s\"]}\n", t(words), t(words), t(words), t(words), t(words)
    }
  }
  function t(m,   s, j) { s = vocab[1 + int(rand() * 3000)]; for (j = 1; j < m; j++) s = s " " vocab[1 + int(rand() * 3000)]; return s }'
}
config() {  # LAYERS HIDDEN INTERMEDIATE HEADS KV VOCAB
  cat <<JSON
{"architectures": ["Qwen2Model"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": $2,
 "intermediate_size": $3, "num_attention_heads": $4, "num_key_value_heads": $5, "num_hidden_layers": $1,
 "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "use_sliding_window": false, "is_causal": false, "vocab_size": $6, "torch_dtype": "float32"}
JSON
}
mkdir -p "$dir/tp" "$dir/mem"
gen 256 60 1 >"$dir/tp/train.jsonl"
gen 4096 20 2 >"$dir/mem/train.jsonl"
config 4 256 1024 4 2 1000 >"$dir/tp.json"
echo "date $(date -u +%F) threads $threads cores $(nproc) load $(cut -d' ' -f1-3 /proc/loadavg)"

# (a)
"$helper" "$dir/tp.json" 2048 "$threads" | tee "$dir/helper.txt"
gemm=$(awk '/^gemm_gflops_f32 /{print $2}' "$dir/helper.txt")
params=$(awk '/^non_embedding_params/{print $2}' "$dir/helper.txt")

# (b) 10 steps; the first (allocator warm-up) is left out, median of the rest.
"$train" "$dir/tp/train.jsonl" --init-config "$dir/tp.json" --train-tokenizer 1000 --batch-size 32 \
  --num-negatives 3 --query-max-length 64 --passage-max-length 64 --max-steps 10 --warmup-steps 0 --lr 1e-4 \
  --threads "$threads" -q -o "$dir/tp/out" --metrics "$dir/tp/metrics.jsonl"
tps=$(sed -E 's/.*"tokens_per_s": ([0-9.e+]+).*/\1/' "$dir/tp/metrics.jsonl" | tail -n +2 | sort -g |
      awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
awk -v g="$gemm" -v p="$params" -v t="$tps" 'BEGIN {
  b = g * 1e9 / (6 * p)
  printf "train_tokens_per_s %.0f\nbound_tokens_per_s %.0f  (%.1f GFLOP/s / (6 x %d params))\nratio %.2f\n", t, b, g, p, t / b }'
echo "loss steps 1..10: $(sed -E 's/.*"loss": ([^,]*),.*/\1/' "$dir/tp/metrics.jsonl" | tr '\n' ' ')"

# (c) One step each; the tokenizer from (b), so that no tokenizer training counts.
rss() {  # BATCH
  /usr/bin/time -v "$train" "$dir/mem/train.jsonl" --init-config "$dir/tp.json" --tokenizer "$dir/tp/out" \
    --stage pretrain --batch-size "$1" --grad-cache-chunk 64 --query-max-length 16 --passage-max-length 16 \
    --max-steps 1 --warmup-steps 0 --threads "$threads" -q -o "$dir/mem/out-$1" 2>"$dir/mem/time-$1.txt"
  awk '/Maximum resident set size/{ printf "%.0f", $NF / 1024 }' "$dir/mem/time-$1.txt"
}
t0=$SECONDS; small=$(rss 256); t1=$SECONDS; large=$(rss 4096); t2=$SECONDS
echo "peak_rss_mb batch 256: $small ($((t1 - t0)) s)  batch 4096: $large ($((t2 - t1)) s)  ratio $(awk -v a="$small" -v b="$large" 'BEGIN { printf "%.2f", b / a }')"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# (d) counts per step: run STEPS_A and STEPS_B steps, report (B - A) / (B - A steps).
per_step() {  # NAME STEPS_A STEPS_B FLAGS...
  local name=$1 a=$2 b=$3; shift 3
  "$counter" "$dir/tp/train.jsonl" --init-config "$dir/tp.json" --tokenizer "$dir/tp/out" --num-negatives 3 \
    --query-max-length 64 --passage-max-length 64 --warmup-steps 0 --lr 1e-4 --threads "$threads" -q \
    --call-tokens 16384 --max-steps "$a" -o "$dir/calls-$name-a" "$@" >"$dir/calls-$name-a.txt"
  "$counter" "$dir/tp/train.jsonl" --init-config "$dir/tp.json" --tokenizer "$dir/tp/out" --num-negatives 3 \
    --query-max-length 64 --passage-max-length 64 --warmup-steps 0 --lr 1e-4 --threads "$threads" -q \
    --call-tokens 16384 --max-steps "$b" -o "$dir/calls-$name-b" "$@" >"$dir/calls-$name-b.txt"
  paste "$dir/calls-$name-a.txt" "$dir/calls-$name-b.txt" |
    awk -v n="$name" -v d=$((b - a)) '{ printf "%s %s per step %.1f\n", n, $1, ($4 - $2) / d }'
}
per_step batch32 2 4 --batch-size 32
per_step batch256_gradcache64 1 2 --batch-size 256 --grad-cache-chunk 64
per_step batch256_gradcache_tokens 1 2 --batch-size 256 --grad-cache
echo "load after counts: $(cut -d' ' -f1-3 /proc/loadavg)"
