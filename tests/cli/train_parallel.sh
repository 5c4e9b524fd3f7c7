#!/usr/bin/env bash
# kalm-train data parallel (c10d Gloo, two processes on this machine): two ranks
# with --batch-size 4 follow the single-process run with --batch-size 8 (same
# global batch, cross-rank negatives, summed gradients) to float rounding.
source "$(dirname "$0")/lib.sh"
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
c=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 48 --instructions "$fx/instructions.json"
   --query-max-length 24 --passage-max-length 24 --lr 1e-3 --threads 1 -q --num-negatives 3 --max-steps 4
   --warmup-steps 0 --grad-cache-chunk 6)

expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 8 -o "$tmp/single" --metrics "$tmp/single.jsonl"
"$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 1 --dist-store "$tmp/store" -o "$tmp/dp" \
  2>"$tmp/rank1.err" &
pid=$!
expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 0 --dist-store "$tmp/store" \
  -o "$tmp/dp" --metrics "$tmp/dp.jsonl"
wait "$pid"; rc=$?
checks=$((checks + 1)); [ "$rc" -eq 0 ] || { echo "FAIL: rank 1 exited $rc"; cat "$tmp/rank1.err"; failures=$((failures + 1)); }
checks=$((checks + 1)); [ -f "$tmp/dp/model.safetensors" ] || { echo "FAIL: no export from rank 0"; failures=$((failures + 1)); }
# Step losses agree to 1e-4 relative.
checks=$((checks + 1))
if ! paste -d' ' <(sed -E 's/.*"loss": ([^,]*),.*/\1/' "$tmp/single.jsonl") \
                 <(sed -E 's/.*"loss": ([^,]*),.*/\1/' "$tmp/dp.jsonl") |
     awk 'BEGIN { n = 0; bad = 0 } { n++; d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) bad = 1 }
          END { exit (n == 4 && !bad) ? 0 : 1 }'; then
  echo "FAIL: data-parallel losses differ"; paste "$tmp/single.jsonl" "$tmp/dp.jsonl" | cut -c1-200
  failures=$((failures + 1))
fi
# Bad rank / missing store: usage errors.
expect_rc 2 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 2 --dist-store "$tmp/s2" -o "$tmp/x"
expect_rc 2 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 0 -o "$tmp/x"

finish
