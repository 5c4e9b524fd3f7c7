#!/usr/bin/env bash
# kalm-train data parallel (c10d Gloo, two processes on this machine): two ranks
# with --batch-size 4 follow the single-process run with --batch-size 8 (same
# global batch, cross-rank negatives, summed gradients) to float rounding; a
# rank killed mid-run makes the other fail within --dist-timeout, not hang.
# (Launching from RANK/WORLD_SIZE and torchrun: train_dist_env.sh.)
source "$(dirname "$0")/lib.sh"
require_data_parallel
unset RANK WORLD_SIZE LOCAL_RANK SLURM_PROCID SLURM_NTASKS SLURM_LOCALID MASTER_ADDR MASTER_PORT  # a launcher around ctest
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
base=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 --instructions "$fx/instructions.json"
      --query-max-length 24 --passage-max-length 24 --lr 1e-3 --threads 1 -q --num-negatives 3
      --warmup-steps 0 --grad-cache-chunk 6)
c=("${base[@]}" --max-steps 4)

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
# Final weights agree to 1e-5.
max_abs_diff() {  # A B: largest |a - b| over the float32 data of two safetensors files
  local ha hb
  ha=$(od -An -tu8 -N8 "$1" | tr -d ' '); hb=$(od -An -tu8 -N8 "$2" | tr -d ' ')
  [ $(($(stat -c %s "$1") - ha)) -eq $(($(stat -c %s "$2") - hb)) ] || { echo "sizes differ"; return; }
  paste -d' ' <(od -An -v -tf4 -w4 -j $((8 + ha)) "$1") <(od -An -v -tf4 -w4 -j $((8 + hb)) "$2") |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%.3g\n", m + 0 }'
}
d=$(max_abs_diff "$tmp/single/model.safetensors" "$tmp/dp/model.safetensors")
echo "max |w(1 x B=8) - w(2 x B=4)| = $d"
checks=$((checks + 1))
awk -v d="$d" 'BEGIN { exit (d ~ /^[0-9.e+-]+$/ && d + 0 <= 1e-5) ? 0 : 1 }' ||
  { echo "FAIL: data-parallel weights differ by $d"; failures=$((failures + 1)); }

# Gradient buckets (--grad-bucket-mb): with 1 KiB buckets every layer's
# all-reduce is launched while backward runs (the metrics count them); with 0,
# one flat all-reduce after backward. Two ranks add the same two numbers either
# way, so the weights agree bit for bit with the default buckets' run.
dp_run() {  # NAME FLAGS...: a 2-rank run into $tmp/NAME with metrics $tmp/NAME.jsonl
  local name=$1; shift
  "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 1 --dist-store "$tmp/store-$name" \
    -o "$tmp/$name" "$@" 2>"$tmp/$name.rank1.err" &
  local pid=$!
  expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 0 --dist-store "$tmp/store-$name" \
    -o "$tmp/$name" --metrics "$tmp/$name.jsonl" "$@"
  wait "$pid" || { echo "FAIL: rank 1 of $name exited $?"; cat "$tmp/$name.rank1.err"; failures=$((failures + 1)); }
  checks=$((checks + 1))
}
dp_run small --grad-bucket-mb 0.001
dp_run flat --grad-bucket-mb 0
# --profile: each rank writes its own trace of steps 2-3; recording changes no weight.
dp_run profiled --profile "$tmp/trace.json" --profile-steps 2:3
for rank in 0 1; do
  f="$tmp/trace.rank$rank.json"
  checks=$((checks + 1))
  if [ "$(grep -o '"name": "ProfilerStep#[0-9]*"' "$f" 2>/dev/null | sort -u | tr '\n' ' ')" != \
       '"name": "ProfilerStep#2" "name": "ProfilerStep#3" ' ]; then
    echo "FAIL: rank $rank's trace $f lacks steps 2 and 3 alone"; failures=$((failures + 1))
  fi
  expect_rc 0 grep -q '"name": "aten::mm"' "$f"
done
expect_no_file "$tmp/trace.json"
for name in small flat profiled; do
  d=$(max_abs_diff "$tmp/dp/model.safetensors" "$tmp/$name/model.safetensors")
  echo "max |w(buckets 25 MiB) - w($name)| = $d"
  checks=$((checks + 1))
  [ "$d" = 0 ] || { echo "FAIL: $name: weights differ from the default buckets' by $d"; failures=$((failures + 1)); }
done
# 1 KiB buckets: the tiny model has several, and every step launched all but
# one during backward: the last, the token-embedding table's, whose gradient
# GradCache accumulates after the pass.
checks=$((checks + 1))
awk '{ b = $0; sub(/.*"grad_buckets": /, "", b); sub(/,.*/, "", b)
       o = $0; sub(/.*"grad_buckets_in_backward": /, "", o); sub(/,.*/, "", o)
       if (!(b + 0 >= 5 && o + 0 == b - 1)) bad = 1; n++ }
     END { exit (n == 4 && !bad) ? 0 : 1 }' "$tmp/small.jsonl" ||
  { echo "FAIL: bucket counts"; cut -c1-400 "$tmp/small.jsonl"; failures=$((failures + 1)); }
head -1 "$tmp/small.jsonl" | grep -o '"grad_buckets[^,]*, "grad_buckets_in_backward": [0-9]*'
expect_rc 0 grep -q '"grad_buckets": 1, ' "$tmp/dp.jsonl"
expect_rc 1 grep -q '"grad_buckets' "$tmp/flat.jsonl"
expect_rc 2 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --grad-bucket-mb -1 -o "$tmp/x"

# Resume across backends at the same world size: a run stopped in a one-process
# Gloo group continues without one, and the other way round, to the same
# weights bit for bit as the straight run.
expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 8 --dist-backend gloo --stop-at-step 2 -o "$tmp/g2p"
expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 8 --resume -o "$tmp/g2p"
expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 8 --stop-at-step 2 -o "$tmp/p2g"
expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 8 --dist-backend gloo --resume -o "$tmp/p2g"
for name in g2p p2g; do
  checks=$((checks + 1))
  cmp -s "$tmp/single/model.safetensors" "$tmp/$name/model.safetensors" ||
    { echo "FAIL: $name: resumed across backends, weights differ from the straight run"; failures=$((failures + 1)); }
done

# Bad rank / missing store: usage errors.
expect_rc 2 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 2 --dist-store "$tmp/s2" -o "$tmp/x"
expect_rc 2 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 0 -o "$tmp/x"
expect_grep "needs a rendezvous: --dist-store FILE" "$tmp/err"
expect_rc 2 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 0 --dist-store "$tmp/s3" \
  --dist-timeout 0 -o "$tmp/x"

# A peer that never comes: the rendezvous gives up after --dist-timeout.
start=$SECONDS
expect_rc 1 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 0 --dist-store "$tmp/s4" \
  --dist-timeout 2 -o "$tmp/alone"
expect_grep "data parallel rendezvous through .*s4 \\(gloo\\) failed on rank 0 of 2: a peer may have died" "$tmp/err"
checks=$((checks + 1))
[ $((SECONDS - start)) -le 30 ] || { echo "FAIL: the lone rank took $((SECONDS - start)) s"; failures=$((failures + 1)); }

# A peer killed mid-run: rank 0 stops with an error naming the collective within
# the timeout, exit 1, and leaves no final model.
dead=(--batch-size 4 --world-size 2 --dist-store "$tmp/s5" --dist-timeout 5 --max-steps 100000 --save-steps 2
      -o "$tmp/dead")
"$train" "$fx/toy" "${base[@]}" "${dead[@]}" --rank 1 2>"$tmp/dead1.err" &
pid1=$!
"$train" "$fx/toy" "${base[@]}" "${dead[@]}" --rank 0 --metrics "$tmp/dead.jsonl" \
  2>"$tmp/dead0.err" &
pid0=$!
for _ in $(seq 600); do
  [ -f "$tmp/dead.jsonl" ] && [ "$(wc -l <"$tmp/dead.jsonl")" -ge 3 ] && break
  kill -0 "$pid0" 2>/dev/null || break
  sleep 0.05
done
echo "killing rank 1 after $(wc -l <"$tmp/dead.jsonl" 2>/dev/null || echo 0) steps"
kill -KILL "$pid1"
wait "$pid1" 2>/dev/null
start=$SECONDS
while kill -0 "$pid0" 2>/dev/null && [ $((SECONDS - start)) -lt 60 ]; do sleep 0.2; done
checks=$((checks + 1))
if kill -0 "$pid0" 2>/dev/null; then
  echo "FAIL: rank 0 still runs 60 s after its peer died"; kill -KILL "$pid0"; failures=$((failures + 1))
fi
wait "$pid0"; rc=$?
echo "rank 0 exited $rc after $((SECONDS - start)) s: $(head -c 300 "$tmp/dead0.err")"
checks=$((checks + 1)); [ "$rc" -eq 1 ] || { echo "FAIL: rank 0 exited $rc, expected 1"; failures=$((failures + 1)); }
expect_grep "^kalm-train: error: data parallel [a-z_ (),'0-9]+ failed on rank 0 of 2: a peer may have died" \
  "$tmp/dead0.err"
expect_no_file "$tmp/dead/model.safetensors"
expect_no_file "$tmp/dead/config.json"

# A peer that hangs (SIGSTOP: its sockets stay open): rank 0 gives up after
# --dist-timeout with the same error.
hang=(--batch-size 4 --world-size 2 --dist-store "$tmp/s6" --dist-timeout 3 --max-steps 100000 -o "$tmp/hang")
"$train" "$fx/toy" "${base[@]}" "${hang[@]}" --rank 1 2>/dev/null &
pid1=$!
"$train" "$fx/toy" "${base[@]}" "${hang[@]}" --rank 0 --metrics "$tmp/hang.jsonl" 2>"$tmp/hang0.err" &
pid0=$!
for _ in $(seq 600); do
  [ -f "$tmp/hang.jsonl" ] && [ "$(wc -l <"$tmp/hang.jsonl")" -ge 2 ] && break
  kill -0 "$pid0" 2>/dev/null || break
  sleep 0.05
done
kill -STOP "$pid1"
start=$SECONDS
while kill -0 "$pid0" 2>/dev/null && [ $((SECONDS - start)) -lt 60 ]; do sleep 0.2; done
checks=$((checks + 1))
if kill -0 "$pid0" 2>/dev/null; then
  echo "FAIL: rank 0 still runs 60 s after its peer hung"; kill -KILL "$pid0"; failures=$((failures + 1))
fi
wait "$pid0"; rc=$?
kill -KILL "$pid1"; kill -CONT "$pid1"; wait "$pid1" 2>/dev/null
echo "rank 0 exited $rc $((SECONDS - start)) s after its peer hung: $(head -c 300 "$tmp/hang0.err")"
checks=$((checks + 1)); [ "$rc" -eq 1 ] || { echo "FAIL: rank 0 exited $rc, expected 1"; failures=$((failures + 1)); }
expect_grep "failed on rank 0 of 2: a peer may have died or stalled \(--dist-timeout 3 s\)" "$tmp/hang0.err"
expect_no_file "$tmp/hang/model.safetensors"

finish
