#!/usr/bin/env bash
# kalm-train / kalm-distill end to end on the toy set and a tiny Qwen2 with a
# SentencePiece tokenizer trained on the fly: usage errors, a run and its export,
# stop + --resume bit-identical to an uninterrupted run, SIGTERM -> checkpoint
# and exit 143, distillation, and the soup subcommand.
source "$(dirname "$0")/lib.sh"
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
distill="$KALM_BIN/kalm-distill"
common=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 --instructions "$fx/instructions.json"
        --batch-size 8 --query-max-length 24 --passage-max-length 24 --lr 1e-3 --threads 1 -q)

# Usage errors exit 2 and name the problem.
expect_rc 2 "$train" "$fx/toy" --output "$tmp/x" --bogus-flag
expect_rc 2 "$train" "$fx/toy" --init-config "$fx/tiny_qwen2.json" --output "$tmp/x"
expect_grep "needs --tokenizer DIR, --train-tokenizer VOCAB or --init-embeddings" "$tmp/err"
expect_rc 2 "$train" "$fx/toy" "${common[@]}"
expect_grep "--output DIR is required" "$tmp/err"
expect_rc 2 "$train" "$fx/toy" "${common[@]}" --stage warmup -o "$tmp/x"
# Runtime errors exit 1 with file:line.
printf '{"query": "q", "pos": []}\n' > "$tmp/bad.jsonl"
expect_rc 1 "$train" "$tmp/bad.jsonl" "${common[@]}" -o "$tmp/x"
expect_grep "bad.jsonl:1" "$tmp/err"
expect_rc 1 "$train" "$tmp/missing.jsonl" "${common[@]}" -o "$tmp/x"

# --profile: a window past the run's steps, or one without a file, is refused
# before training; an unwritable trace fails before training too.
expect_rc 2 "$train" "$fx/toy" "${common[@]}" --max-steps 2 -o "$tmp/p" --profile "$tmp/p.json" --profile-steps 3:4
expect_grep "--profile-steps 3:4: the run has 2 optimiser steps" "$tmp/err"
expect_no_file "$tmp/p.json"
expect_rc 2 "$train" "$fx/toy" "${common[@]}" --max-steps 2 -o "$tmp/p" --profile-steps 1
expect_grep "--profile-steps needs --profile FILE" "$tmp/err"
expect_rc 1 "$train" "$fx/toy" "${common[@]}" --max-steps 2 -o "$tmp/p" --profile "$tmp/no-such-dir/p.json"
expect_grep "no-such-dir/p.json: cannot create" "$tmp/err"
checks=$((checks + 1)); [ ! -e "$tmp/p/model.safetensors" ] || { echo "FAIL: trained beside an unwritable --profile"; failures=$((failures + 1)); }
# Stopped before the window: no trace, said on stderr even under -q.
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 4 -o "$tmp/ps" --profile "$tmp/ps.json" --profile-steps 3 \
  --stop-at-step 1
expect_grep "^kalm-train: no profile: the run stopped at step 1, before step 3" "$tmp/err"
expect_no_file "$tmp/ps.json"
# A dumped config without --profile loads again (the default window is not dumped).
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 1 -o "$tmp/cfg" --dump-config
cp "$tmp/out" "$tmp/dumped.toml"
expect_rc 1 grep -q "profile" "$tmp/dumped.toml"
expect_rc 0 "$train" --config "$tmp/dumped.toml"
checks=$((checks + 1)); [ -f "$tmp/cfg/model.safetensors" ] || { echo "FAIL: no model from the dumped config"; failures=$((failures + 1)); }

# --help lists the flags with defaults.
expect_rc 0 "$train" --help
expect_grep "--grad-cache-chunk" "$tmp/out"
expect_grep "--batch-size INT:POSITIVE=48" "$tmp/out"
expect_grep "--profile-steps TEXT .*\[3:5, counted from where the run starts\]" "$tmp/out"

# A full run: 4 steps over 2 epochs (grad accumulation 2), metrics and an export.
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --num-negatives 3 --grad-accumulation 2 --epochs 2 \
  --task-homogeneous --homogeneous-ratio 0.75 --grad-cache-chunk 5 -o "$tmp/full" --metrics "$tmp/full.jsonl"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json modules.json 1_Pooling/config.json \
         config_sentence_transformers.json kalm_training.json; do
  checks=$((checks + 1)); [ -f "$tmp/full/$f" ] || { echo "FAIL: export lacks $f"; failures=$((failures + 1)); }
done
expect_grep '"step": 4,' "$tmp/full.jsonl"
expect_grep '"retrieval": "Instruct: Given a question' "$tmp/full/config_sentence_transformers.json"
# The exported model embeds with kalm-embed.
printf '{"id": "a", "text": "the cat sleeps"}\n' > "$tmp/c.jsonl"
expect_rc 0 "$KALM_BIN/kalm-embed" --model "$tmp/full" "$tmp/c.jsonl" -o "$tmp/e.jsonl" --threads 1 -q
expect_grep '"embedding"' "$tmp/e.jsonl"

# Stop after step 3, resume: the same bytes as the uninterrupted run.
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --num-negatives 3 --grad-accumulation 2 --epochs 2 \
  --task-homogeneous --homogeneous-ratio 0.75 --grad-cache-chunk 5 -o "$tmp/part" --stop-at-step 3
checks=$((checks + 1)); [ -f "$tmp/part/checkpoint-3/optimizer.safetensors" ] || { echo "FAIL: no checkpoint-3"; failures=$((failures + 1)); }
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --num-negatives 3 --grad-accumulation 2 --epochs 2 \
  --task-homogeneous --homogeneous-ratio 0.75 --grad-cache-chunk 5 -o "$tmp/part" --resume
checks=$((checks + 1))
cmp -s "$tmp/full/model.safetensors" "$tmp/part/model.safetensors" || { echo "FAIL: resumed weights differ"; failures=$((failures + 1)); }

# SIGTERM: checkpoint at the next step boundary, exit 128 + 15.
"$train" "$fx/toy/retrieval.jsonl" "${common[@]}" --stage pretrain --max-steps 100000 -o "$tmp/sig" &
pid=$!
for _ in $(seq 100); do [ -d "$tmp/sig/.kalm-tokenizer" ] && break; sleep 0.1; done
kill -TERM "$pid"
wait "$pid"; rc=$?
checks=$((checks + 1)); [ "$rc" -eq 143 ] || { echo "FAIL: SIGTERM exit $rc, expected 143"; failures=$((failures + 1)); }
checks=$((checks + 1)); ls -d "$tmp"/sig/checkpoint-* >/dev/null 2>&1 || { echo "FAIL: no checkpoint after SIGTERM"; failures=$((failures + 1)); }
expect_no_file "$tmp/sig/model.safetensors"

# bf16 autocast trains and exports float32 weights.
expect_rc 0 "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" --stage pretrain --max-steps 2 --dtype bf16 -o "$tmp/bf16"
expect_grep '"torch_dtype": "float32"' "$tmp/bf16/config.json"
expect_rc 2 "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" --dtype f16 -o "$tmp/f16"

# --device: cpu is the default (same bytes), a bad name is a usage error, and
# CUDA either trains (a GPU build on a GPU machine) or is refused with the reason.
expect_rc 0 "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" --stage pretrain --max-steps 2 --dtype bf16 \
  --device cpu -o "$tmp/bf16-cpu"
checks=$((checks + 1))
cmp -s "$tmp/bf16/model.safetensors" "$tmp/bf16-cpu/model.safetensors" || { echo "FAIL: --device cpu changed the weights"; failures=$((failures + 1)); }
for bad in tpu cpu:1 cuda:x; do
  expect_rc 2 "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" --device "$bad" -o "$tmp/dev"
  expect_grep "--device wants cpu, cuda or cuda:N, got '$bad'" "$tmp/err"
done
expect_no_file "$tmp/dev"
if "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" --stage pretrain --max-steps 2 --device cuda -o "$tmp/cuda" \
     >"$tmp/out" 2>"$tmp/err"; then
  expect_grep '"torch_dtype": "float32"' "$tmp/cuda/config.json" "a model trained on CUDA"
else
  expect_grep "^kalm-train: error: --device cuda: this build of LibTorch has no CUDA, or no GPU is visible" "$tmp/err"
  expect_no_file "$tmp/cuda"
fi
# TF32 is a GPU mode: asked for on CPU it is refused (exit 2), never run as f32.
expect_rc 2 "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" --stage pretrain --max-steps 2 --dtype tf32 -o "$tmp/tf32"
expect_grep "^kalm-train: error: --dtype tf32 is a GPU mode \(TF32 tensor cores\); on cpu use f32" "$tmp/err"
expect_no_file "$tmp/tf32/model.safetensors"

# Distillation from pos_scores / neg_scores.
expect_rc 0 "$distill" "$fx/toy/sts.jsonl" --init "$tmp/full" --num-negatives 1 --batch-size 8 --max-steps 2 \
  --query-max-length 24 --passage-max-length 24 --threads 1 -q -o "$tmp/dist" --metrics "$tmp/dist.jsonl"
expect_grep '"kl": ' "$tmp/dist.jsonl"
printf '{"query": "q", "pos": ["p"], "neg": ["n"]}\n' > "$tmp/noscores.jsonl"
expect_rc 1 "$distill" "$tmp/noscores.jsonl" --init "$tmp/full" --num-negatives 1 --batch-size 1 -q -o "$tmp/d2"
expect_grep "noscores.jsonl:1" "$tmp/err"

# Soup: uniform average of two models.
expect_rc 0 "$train" soup -o "$tmp/soup" "$tmp/full" "$tmp/dist"
checks=$((checks + 1)); [ -f "$tmp/soup/model.safetensors" ] || { echo "FAIL: no soup"; failures=$((failures + 1)); }
expect_rc 2 "$train" soup -o "$tmp/soup2" "$tmp/full" "$tmp/dist" --weights 1

finish
