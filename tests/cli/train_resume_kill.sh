#!/usr/bin/env bash
# kalm-train killed with SIGKILL (no handler, no cleanup) at random steps, then
# continued with --resume, twice: the final weights are byte-identical to an
# uninterrupted run's, and the metrics file holds every step once, in order.
# The kill points come from a seed printed below; rerun with
# KALM_TEST_SEED=<seed> to repeat a failure.
source "$(dirname "$0")/lib.sh"
unset RANK WORLD_SIZE LOCAL_RANK SLURM_PROCID SLURM_NTASKS SLURM_LOCALID MASTER_ADDR MASTER_PORT  # a launcher around ctest
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
steps=24
c=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 --instructions "$fx/instructions.json"
   --batch-size 8 --query-max-length 24 --passage-max-length 24 --lr 1e-3 --threads 1 -q --num-negatives 3
   --grad-cache-chunk 5 --max-steps "$steps" --warmup-steps 2)

seed=${KALM_TEST_SEED:-$RANDOM}
RANDOM=$seed
kill1=$((1 + RANDOM % (steps / 3)))                    # in [1, steps/3]
kill2=$((kill1 + 1 + RANDOM % (steps / 3)))            # after kill1, before 2/3 of the run
echo "seed $seed: SIGKILL after step $kill1, then after step $kill2 (of $steps)"

# The reference: no interruption, no intermediate checkpoints.
expect_rc 0 "$train" "$fx/toy" "${c[@]}" -o "$tmp/ref" --metrics "$tmp/ref.jsonl"

# lines FILE: number of complete metrics lines.
lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }

# run_and_kill STEP [--resume]: train in the background, SIGKILL it once the
# metrics file has reached STEP lines (the kill lands in the next step or in the
# checkpoint being written).
run_and_kill() {
  local at=$1; shift
  "$train" "$fx/toy" "${c[@]}" --save-steps 1 -o "$tmp/run" --metrics "$tmp/run.jsonl" "$@" 2>"$tmp/kill.err" &
  local pid=$! n=0
  for _ in $(seq 3000); do
    n=$(lines "$tmp/run.jsonl")
    [ "$n" -ge "$at" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null; local rc=$?
  checks=$((checks + 1))
  if [ "$rc" -ne 137 ]; then
    echo "FAIL: the run was not killed at step $at (exit $rc, $n metrics lines)"; cat "$tmp/kill.err"
    failures=$((failures + 1))
  fi
  echo "killed after $n metrics lines; newest checkpoint: $(ls -d "$tmp"/run/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tail -1 | xargs -r basename)"
  # Killed before the end: nothing may look like a final model.
  checks=$((checks + 1))
  if [ -e "$tmp/run/model.safetensors" ] || [ -e "$tmp/run/kalm_training.json" ]; then
    echo "FAIL: a killed run left a final model"; failures=$((failures + 1))
  fi
}

run_and_kill "$kill1"
run_and_kill "$kill2" --resume
expect_rc 0 "$train" "$fx/toy" "${c[@]}" --save-steps 1 -o "$tmp/run" --metrics "$tmp/run.jsonl" --resume

checks=$((checks + 1))
if ! cmp "$tmp/ref/model.safetensors" "$tmp/run/model.safetensors"; then
  echo "FAIL: resumed weights differ from the uninterrupted run (seed $seed)"; failures=$((failures + 1))
fi
# Every step exactly once, in order.
checks=$((checks + 1))
if ! sed -E 's/^\{"step": ([0-9]+),.*/\1/' "$tmp/run.jsonl" |
     awk -v n="$steps" '{ if ($1 != NR) exit 1 } END { exit NR == n ? 0 : 1 }'; then
  echo "FAIL: metrics are not steps 1..$steps once each"; cut -c1-40 "$tmp/run.jsonl"; failures=$((failures + 1))
fi
# The step losses equal the reference's (same run, same floats).
checks=$((checks + 1))
if ! diff <(sed -E 's/, "tokens_per_s": [^}]*//' "$tmp/ref.jsonl") <(sed -E 's/, "tokens_per_s": [^}]*//' "$tmp/run.jsonl") >/dev/null; then
  echo "FAIL: resumed metrics differ from the uninterrupted run's"; failures=$((failures + 1))
fi

finish
