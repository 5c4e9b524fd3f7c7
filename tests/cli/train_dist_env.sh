#!/usr/bin/env bash
# kalm-train launched from the environment, as torchrun --no-python and Slurm
# wrappers do: RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (no --rank flags) meet
# through a TCP store served by rank 0. Two such ranks with --batch-size 4 give
# the weights of one process with --batch-size 8 (to 1e-5), and the same bytes
# as two ranks started with --rank/--dist-store. Then the same through torchrun
# (static and standalone rendezvous) from the set-up's torch (KALM_PYTHON).
source "$(dirname "$0")/lib.sh"
require_data_parallel
unset RANK WORLD_SIZE LOCAL_RANK SLURM_PROCID SLURM_NTASKS SLURM_LOCALID MASTER_ADDR MASTER_PORT
unset TORCHELASTIC_USE_AGENT_STORE TORCHELASTIC_RESTART_COUNT
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
c=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 --instructions "$fx/instructions.json"
   --query-max-length 24 --passage-max-length 24 --lr 1e-3 --threads 1 -q --num-negatives 3 --max-steps 4
   --warmup-steps 0 --grad-cache-chunk 6 --dist-timeout 60)

free_port() {  # a TCP port nobody listens on now
  local py
  for py in "${KALM_PYTHON:-}" python3; do
    command -v "$py" >/dev/null &&
      "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' && return
  done
  echo $((20000 + RANDOM % 30000))
}
max_abs_diff() {  # A B: largest |a - b| over the float32 data of two safetensors files
  local ha hb
  ha=$(od -An -tu8 -N8 "$1" | tr -d ' '); hb=$(od -An -tu8 -N8 "$2" | tr -d ' ')
  [ $(($(stat -c %s "$1") - ha)) -eq $(($(stat -c %s "$2") - hb)) ] || { echo "sizes differ"; return; }
  paste -d' ' <(od -An -v -tf4 -w4 -j $((8 + ha)) "$1") <(od -An -v -tf4 -w4 -j $((8 + hb)) "$2") |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%.3g\n", m + 0 }'
}
expect_close() {  # WHAT A B: weights within 1e-5
  local d
  d=$(max_abs_diff "$2" "$3")
  echo "$1: max |dw| = $d"
  checks=$((checks + 1))
  awk -v d="$d" 'BEGIN { exit (d ~ /^[0-9.e+-]+$/ && d + 0 <= 1e-5) ? 0 : 1 }' ||
    { echo "FAIL: $1: weights differ by $d"; failures=$((failures + 1)); }
}
expect_same() {  # WHAT A B: byte-identical
  checks=$((checks + 1))
  cmp -s "$2" "$3" || { echo "FAIL: $1: weights are not byte-identical"; failures=$((failures + 1)); }
}

# References: one process with the global batch; two ranks from flags.
expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 8 -o "$tmp/single"
"$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 1 --dist-store "$tmp/store" -o "$tmp/flags" &
pid=$!
expect_rc 0 "$train" "$fx/toy" "${c[@]}" --batch-size 4 --world-size 2 --rank 0 --dist-store "$tmp/store" \
  -o "$tmp/flags"
wait "$pid"

# Two ranks from RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT.
port=$(free_port)
echo "MASTER_PORT=$port"
env RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" \
  "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/env" 2>"$tmp/rank1.err" &
pid=$!
expect_rc 0 env RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" \
  "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/env"
wait "$pid"; rc=$?
checks=$((checks + 1)); [ "$rc" -eq 0 ] || { echo "FAIL: rank 1 exited $rc"; cat "$tmp/rank1.err"; failures=$((failures + 1)); }
expect_close "RANK/WORLD_SIZE x 2 vs 1 process" "$tmp/single/model.safetensors" "$tmp/env/model.safetensors"
expect_same "RANK/WORLD_SIZE vs --rank/--dist-store" "$tmp/flags/model.safetensors" "$tmp/env/model.safetensors"

# Slurm's variables when RANK/WORLD_SIZE are absent (MASTER_* from the batch script).
port=$(free_port)
env SLURM_PROCID=1 SLURM_NTASKS=2 SLURM_LOCALID=1 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" \
  "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/slurm" 2>"$tmp/rank1.err" &
pid=$!
expect_rc 0 env SLURM_PROCID=0 SLURM_NTASKS=2 SLURM_LOCALID=0 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" \
  "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/slurm"
wait "$pid"
expect_same "SLURM_PROCID/SLURM_NTASKS vs --rank/--dist-store" "$tmp/flags/model.safetensors" \
  "$tmp/slurm/model.safetensors"

# Flags beat the environment: --world-size 1 trains alone despite WORLD_SIZE=2.
expect_rc 0 env RANK=1 WORLD_SIZE=2 "$train" "$fx/toy" "${c[@]}" --batch-size 8 --world-size 1 --rank 0 -o "$tmp/alone"
expect_same "--world-size 1 under WORLD_SIZE=2" "$tmp/single/model.safetensors" "$tmp/alone/model.safetensors"
# Bad launcher variables are usage errors that name the variable.
expect_rc 2 env RANK=0 "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/x"
expect_grep "sets RANK but not WORLD_SIZE" "$tmp/err"
expect_rc 2 env RANK=zero WORLD_SIZE=2 "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/x"
expect_grep "RANK='zero' is not an integer" "$tmp/err"
expect_rc 2 env RANK=0 WORLD_SIZE=2 "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/x"
expect_grep "MASTER_ADDR and MASTER_PORT" "$tmp/err"

# torchrun --no-python from the set-up's torch: static rendezvous (the agent
# serves the store; every rank is a client) and --standalone (rank 0 serves it).
torchrun=("${KALM_PYTHON:-python3}" -m torch.distributed.run)
if ! "${torchrun[@]}" --help >/dev/null 2>&1; then
  torchrun=()
  echo "FAIL: torchrun (${KALM_PYTHON:-python3} -m torch.distributed.run) does not run (scripts/setup.sh installs it)"
  failures=$((failures + 1))
fi
if [ ${#torchrun[@]} -gt 0 ]; then
  port=$(free_port)
  expect_rc 0 env OMP_NUM_THREADS=1 "${torchrun[@]}" --no-python --nnodes 1 --nproc-per-node 2 \
    --master-addr 127.0.0.1 --master-port "$port" "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/torchrun"
  expect_same "torchrun (static) vs --rank/--dist-store" "$tmp/flags/model.safetensors" \
    "$tmp/torchrun/model.safetensors"
  expect_rc 0 env OMP_NUM_THREADS=1 "${torchrun[@]}" --no-python --standalone --nproc-per-node 2 \
    "$train" "$fx/toy" "${c[@]}" --batch-size 4 -o "$tmp/standalone"
  expect_same "torchrun --standalone vs --rank/--dist-store" "$tmp/flags/model.safetensors" \
    "$tmp/standalone/model.safetensors"
fi

finish
