# Outputs under concurrency and full disks (issue 13): a run claims its output
# directory or output files, and a second run exits 1 naming the holder; an
# export, checkpoint or soup that fails part-way (the file-size limit stands in
# for a full disk) leaves nothing that looks finished and no staging directory.
source "$(dirname "$0")/lib.sh"
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
filter="$KALM_BIN/kalm-synth-filter"
common=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 --instructions "$fx/instructions.json"
        --batch-size 8 --query-max-length 24 --passage-max-length 24 --lr 1e-3 --threads 1 -q --seed 5)

# wait_for FILE: up to 60 s for FILE to appear.
wait_for() {
  local i
  for i in $(seq 600); do [ -e "$1" ] && return 0; sleep 0.1; done
  echo "FAIL: $1 never appeared"; failures=$((failures + 1)); return 1
}

# 1. Two kalm-train runs, one directory: the second exits 1 naming the first.
"$train" "$fx/toy" "${common[@]}" --max-steps 100000 -o "$tmp/shared" 2>"$tmp/first.err" &
first=$!
if wait_for "$tmp/shared/.kalm.lock"; then
  expect_rc 1 "$train" "$fx/toy" "${common[@]}" --max-steps 2 -o "$tmp/shared" &&
    expect_grep "^kalm-train: error: $tmp/shared: another run is writing this output \\(pid $first on host .*, kalm-train \\(finetune stage\\) started 20" "$tmp/err"
  expect_rc 1 "$train" soup -o "$tmp/shared" "$KALM_SOURCE_DIR/tests/fixtures/models/qwen2_causal" && expect_grep "another run is writing this output \\(pid $first " "$tmp/err"
fi
kill -TERM "$first" 2>/dev/null; wait "$first"
checks=$((checks + 1)); [ ! -e "$tmp/shared/.kalm.lock" ] || { echo "FAIL: the lock file outlived the run"; failures=$((failures + 1)); }
# The directory is free again once the holder is gone.
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 2 -o "$tmp/shared"

# 2. The final export fails (file-size limit below model.safetensors): exit 1,
# no config.json / model / kalm_training.json, no staging directory.
expect_rc 1 bash -c 'trap "" XFSZ; ulimit -f 50; exec "$@"' sh "$train" "$fx/toy" "${common[@]}" --max-steps 2 -o "$tmp/full" && {
  expect_grep "File too large" "$tmp/err"
  listing=$(cd "$tmp/full" && ls -A | tr '\n' ' ')
  checks=$((checks + 1))
  case " $listing" in
    *" config.json "*|*model.safetensors*|*kalm_training.json*|*".kalm-tmp"*|*".kalm.lock"*)
      echo "FAIL: a failed export left: $listing"; failures=$((failures + 1)) ;;
  esac
}
# 3. The same at a checkpoint: no hidden partial checkpoint left.
expect_rc 1 bash -c 'trap "" XFSZ; ulimit -f 50; exec "$@"' sh "$train" "$fx/toy" "${common[@]}" --max-steps 2 --save-steps 1 -o "$tmp/fullck" && {
  listing=$(cd "$tmp/fullck" && ls -A | tr '\n' ' ')
  checks=$((checks + 1))
  case " $listing" in
    *checkpoint*|*" config.json "*|*model.safetensors*|*".kalm-tmp"*)
      echo "FAIL: a failed checkpoint left: $listing"; failures=$((failures + 1)) ;;
  esac
}
# ... and a later run in that directory finishes normally.
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 2 --save-steps 1 -o "$tmp/fullck" &&
  for f in checkpoint-1/model.safetensors config.json model.safetensors kalm_training.json; do
    checks=$((checks + 1)); [ -s "$tmp/fullck/$f" ] || { echo "FAIL: $f missing after the rerun"; failures=$((failures + 1)); }
  done
# 4. A soup that fails part-way leaves no model behind; a re-export over an old one replaces it whole.
expect_rc 1 bash -c 'trap "" XFSZ; ulimit -f 50; exec "$@"' sh "$train" soup -o "$tmp/soup" "$tmp/shared" && {
  checks=$((checks + 1))
  [ ! -e "$tmp/soup/config.json" ] && [ ! -e "$tmp/soup/model.safetensors" ] && ! ls -A "$tmp/soup" | grep -q kalm-tmp ||
    { echo "FAIL: a failed soup left: $(ls -A "$tmp/soup")"; failures=$((failures + 1)); }
}
expect_rc 0 "$train" soup -o "$tmp/soup" "$tmp/shared" "$tmp/fullck" &&
  { checks=$((checks + 1)); [ -s "$tmp/soup/config.json" ] && [ -s "$tmp/soup/model.safetensors" ] ||
    { echo "FAIL: soup output incomplete"; failures=$((failures + 1)); }; }

# 5. kalm-synth-filter: a run holds its output, rejects and .meta.json for its
# whole length; a second run to any of them exits 1 and writes nothing.
printf '%s\n' '{"query": "q1", "pos": ["p1"]}' '{"query": "q1", "pos": ["p1"]}' > "$tmp/two.jsonl"
mkfifo "$tmp/slow.fifo"
"$filter" -q --rejects "$tmp/rej.jsonl" -o "$tmp/out.jsonl" "$tmp/slow.fifo" 2>"$tmp/first.err" &
first=$!
if wait_for "$tmp/.out.jsonl.kalm.lock"; then
  expect_rc 1 "$filter" -q --rejects "$tmp/other-rej.jsonl" -o "$tmp/out.jsonl" "$tmp/two.jsonl" &&
    expect_grep "out.jsonl: another run is writing this output \\(pid $first on host .*, kalm-synth-filter started" "$tmp/err"
  expect_rc 1 "$filter" -q --rejects "$tmp/rej.jsonl" -o "$tmp/other.jsonl" "$tmp/two.jsonl" &&
    expect_grep "rej.jsonl: another run is writing this output \\(pid $first " "$tmp/err"
  expect_no_file "$tmp/other.jsonl"; expect_no_file "$tmp/other-rej.jsonl"
fi
cat "$tmp/two.jsonl" > "$tmp/slow.fifo"
wait "$first"; rc=$?
checks=$((checks + 1)); [ "$rc" -eq 0 ] || { echo "FAIL: the first filter exited $rc"; cat "$tmp/first.err"; failures=$((failures + 1)); }
checks=$((checks + 1))
[ "$(wc -l < "$tmp/out.jsonl")" -eq 1 ] && [ "$(wc -l < "$tmp/rej.jsonl")" -eq 1 ] && grep -q '"kept": 1' "$tmp/out.jsonl.meta.json" ||
  { echo "FAIL: the first filter's outputs do not add up"; failures=$((failures + 1)); }
checks=$((checks + 1)); ! ls -A "$tmp" | grep -q 'kalm.lock' || { echo "FAIL: lock files left: $(ls -A "$tmp" | grep kalm.lock)"; failures=$((failures + 1)); }
finish
