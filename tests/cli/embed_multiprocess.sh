# kalm-embed under a multi-process launch (torchrun's RANK/WORLD_SIZE, Slurm's
# SLURM_PROCID/SLURM_NTASKS), run here as CPU processes: rank r embeds chunks
# r, r + N, ... and rank 0 joins the parts into one output in input order, the
# same bytes as one process. A failed rank ends rank 0 with its message; a
# missing rank ends it after --dist-timeout.
. "$(dirname "$0")/lib.sh"
embed="$KALM_BIN/kalm-embed"
src="$KALM_SOURCE_DIR"
PY=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}

model="$tmp/model"
cp -r "$src/tests/fixtures/models/qwen2_bidir" "$model"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/"tokenizer*.json "$model/"
# 50 texts of varied length; chunks of 7 records: 8 chunks, the last short.
for i in $(seq 50); do printf '{"id": "d%d", "text": "%s"}\n' "$i" "$(printf 'word%d %.0s' $(seq $((i % 13 + 1))))"; done > "$tmp/corpus.jsonl"
common=(-q -m "$model" --max-length 32 --chunk-records 7 --threads 1)

expect_rc 0 "$embed" "${common[@]}" "$tmp/corpus.jsonl" -o "$tmp/one.safetensors"
expect_rc 0 "$embed" "${common[@]}" "$tmp/corpus.jsonl" -o "$tmp/one.npy"
expect_rc 0 "$embed" "${common[@]}" --quantize int8 "$tmp/corpus.jsonl" -o "$tmp/one_int8.npy"

# launch WORLD OUTPUT [extra flags]: every rank in the background, torchrun's variables.
launch() {
  local world=$1 out=$2; shift 2
  local pids=() r
  for r in $(seq 0 $((world - 1))); do
    RANK=$r WORLD_SIZE=$world LOCAL_RANK=$r "$embed" "${common[@]}" "$@" "$tmp/corpus.jsonl" -o "$out" 2> "$tmp/rank$r.err" &
    pids+=($!)
  done
  local rc=0
  for r in "${!pids[@]}"; do wait "${pids[$r]}" || rc=$((rc | 1 << r)); done
  return $rc
}
for world in 2 3; do
  checks=$((checks + 1))
  if launch $world "$tmp/w$world.safetensors" && launch $world "$tmp/w$world.npy"; then
    $PY - "$tmp" "$world" <<'PYEOF' || { echo "FAIL: $world processes differ from one"; failures=$((failures + 1)); }
import sys, numpy as np
from safetensors.numpy import load_file
d, w = sys.argv[1], sys.argv[2]
one = load_file(f"{d}/one.safetensors")["embeddings"]
many = load_file(f"{d}/w{w}.safetensors")["embeddings"]
assert one.shape == (50, 64) and many.shape == one.shape, (one.shape, many.shape)
assert one.tobytes() == many.tobytes(), np.abs(one - many).max()
assert np.load(f"{d}/one.npy").tobytes() == np.load(f"{d}/w{w}.npy").tobytes()
PYEOF
  else
    echo "FAIL: a launch of $world processes failed"; cat "$tmp"/rank*.err; failures=$((failures + 1))
  fi
  checks=$((checks + 1))
  if ls "$tmp"/w$world.*part* >/dev/null 2>&1; then echo "FAIL: parts left behind"; failures=$((failures + 1)); fi
done
expect_grep '"processes": "2"' <($PY -c 'import json,struct,sys; f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]; print(json.dumps(json.loads(f.read(n))["__metadata__"]))' "$tmp/w2.safetensors") "metadata names the launch"
# int8 ranges come from the whole corpus, not a rank's slice.
checks=$((checks + 1))
launch 3 "$tmp/w3_int8.npy" --quantize int8 && cmp -s "$tmp/one_int8.npy" "$tmp/w3_int8.npy" ||
  { echo "FAIL: --quantize int8 under 3 processes differs from one"; failures=$((failures + 1)); }
# With the next chunk read on another thread (--overlap on; the default on a GPU), each rank
# still takes its own chunks: the same bytes.
checks=$((checks + 1))
launch 3 "$tmp/w3_overlap.npy" --overlap on && cmp -s "$tmp/one.npy" "$tmp/w3_overlap.npy" ||
  { echo "FAIL: --overlap on under 3 processes differs from one"; failures=$((failures + 1)); }
# Slurm's variables work the same way.
checks=$((checks + 1))
for r in 0 1; do
  SLURM_PROCID=$r SLURM_NTASKS=2 SLURM_LOCALID=$r SLURM_JOB_ID=77 "$embed" "${common[@]}" "$tmp/corpus.jsonl" -o "$tmp/slurm.npy" 2> "$tmp/slurm$r.err" &
done
wait
cmp -s "$tmp/one.npy" "$tmp/slurm.npy" || { echo "FAIL: Slurm launch differs"; failures=$((failures + 1)); }

# A rank that fails (a text it tokenises is too long under --no-truncate) ends
# rank 0 with its message; no output appears.
cp "$tmp/corpus.jsonl" "$tmp/bad.jsonl"
printf '{"id": "x", "text": "%s"}\n' "$(printf 'many words %.0s' $(seq 40))" >> "$tmp/bad.jsonl"   # chunk 7: rank 1 of 2
common+=(--no-truncate)
RANK=0 WORLD_SIZE=2 "$embed" "${common[@]}" "$tmp/bad.jsonl" -o "$tmp/bad.npy" 2> "$tmp/bad0.err" &
pid0=$!
RANK=1 WORLD_SIZE=2 "$embed" "${common[@]}" "$tmp/bad.jsonl" -o "$tmp/bad.npy" 2> "$tmp/bad1.err" &
pid1=$!
rc0=0; wait $pid0 || rc0=$?
rc1=0; wait $pid1 || rc1=$?
checks=$((checks + 1))
[ "$rc0" -eq 1 ] && [ "$rc1" -eq 1 ] || { echo "FAIL: rank exit codes $rc0 $rc1, expected 1 1"; failures=$((failures + 1)); }
expect_grep "rank 1 of 2 failed: .*bad.jsonl:51: text exceeds the token limit, --max-length 32 \(--no-truncate\)" "$tmp/bad0.err" "rank 0 names rank 1's failure"
expect_no_file "$tmp/bad.npy"
# A rank that never comes: rank 0 gives up after --dist-timeout.
expect_rc 1 env RANK=0 WORLD_SIZE=2 "$embed" "${common[@]}" --dist-timeout 1 "$tmp/corpus.jsonl" -o "$tmp/alone.npy" &&
  expect_grep "alone.npy.part-1-of-2: rank 1's part of this run did not appear within --dist-timeout 1 s" "$tmp/err"
expect_no_file "$tmp/alone.npy"
# Usage errors.
expect_rc 2 env RANK=0 WORLD_SIZE=2 "$embed" "${common[@]}" "$tmp/corpus.jsonl" -o "$tmp/x.jsonl" &&
  expect_grep "writes a safetensors or npy output" "$tmp/err"
expect_rc 2 env RANK=0 WORLD_SIZE=2 "$embed" "${common[@]}" --shard 1/2 "$tmp/corpus.jsonl" -o "$tmp/x.npy" &&
  expect_grep "--shard and a launch of 2 processes \(RANK/WORLD_SIZE\) are exclusive" "$tmp/err"
expect_rc 2 env RANK=1 "$embed" "${common[@]}" "$tmp/corpus.jsonl" -o "$tmp/x.npy" &&
  expect_grep "sets RANK but not WORLD_SIZE" "$tmp/err"
finish
