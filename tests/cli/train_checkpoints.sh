# Checkpoint pruning and the temporary tokenizer directory: the paths that
# remove directories (kalm::io::remove_tree; a std::filesystem::remove_all there
# crashed in builds against pip's LibTorch). --save-steps 1 --keep-checkpoints 1
# leaves exactly the newest checkpoint, no staging directory and no
# .kalm-tokenizer; --resume from it continues to the same weights as a run
# without interruption.
source "$(dirname "$0")/lib.sh"
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
common=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 --instructions "$fx/instructions.json"
        --batch-size 8 --query-max-length 24 --passage-max-length 24 --lr 1e-3 --threads 1 -q --seed 5)

expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 3 --save-steps 1 --keep-checkpoints 1 -o "$tmp/run" && {
  listing=$(cd "$tmp/run" && ls -A | sort | tr '\n' ' ')
  checks=$((checks + 1))
  case " $listing" in
    *" checkpoint-1 "*|*" checkpoint-3 "*|*".kalm-tmp"*|*".kalm-tokenizer"*)
      echo "FAIL: left behind in the output directory: $listing"; failures=$((failures + 1)) ;;
  esac
  for f in checkpoint-2/model.safetensors model.safetensors config.json tokenizer.json; do
    checks=$((checks + 1))
    [ -s "$tmp/run/$f" ] || { echo "FAIL: $f missing (have: $listing)"; failures=$((failures + 1)); }
  done
}
# Two checkpoints kept of three.
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 3 --save-steps 1 --keep-checkpoints 2 -o "$tmp/two" && {
  checks=$((checks + 1))
  got=$(cd "$tmp/two" && ls -d checkpoint-* | sort | tr '\n' ' ')
  [ "$got" = "checkpoint-1 checkpoint-2 " ] || { echo "FAIL: kept '$got'"; failures=$((failures + 1)); }
}
# Stopping at step 1 and resuming (pruning the checkpoint it resumed from, whose
# tokenizer files the export needs) ends where the straight run ended.
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 3 --save-steps 1 --keep-checkpoints 1 --stop-at-step 1 \
  -o "$tmp/resumed"
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 3 --save-steps 1 --keep-checkpoints 1 --resume \
  -o "$tmp/resumed"
checks=$((checks + 1))
cmp -s "$tmp/run/model.safetensors" "$tmp/resumed/model.safetensors" ||
  { echo "FAIL: resumed weights differ from the straight run"; failures=$((failures + 1)); }

# Subnormal floats: flushed unless --keep-denormals, recorded in the state; a
# resumed run must agree, and a state naming another mode is refused.
expect_grep '"cpu_denormals": "flushed"' "$tmp/run/kalm_training.json" "the default mode in the state"
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --max-steps 3 --save-steps 1 --stop-at-step 1 --keep-denormals   -o "$tmp/kept"
expect_grep '"cpu_denormals": "kept"' "$tmp/kept/checkpoint-1/trainer_state.json" "--keep-denormals in the state"
expect_rc 2 "$train" "$fx/toy" "${common[@]}" --max-steps 3 --save-steps 1 --resume -o "$tmp/kept"
expect_grep "was made with subnormal floats \(--keep-denormals\) kept, this run has flushed" "$tmp/err"   "resuming without --keep-denormals"
checks=$((checks + 1))
[ ! -e "$tmp/kept/model.safetensors" ] || { echo "FAIL: the refused resume exported a model"; failures=$((failures + 1)); }
sed -i 's/"cpu_denormals": "kept"/"cpu_denormals": "sometimes"/' "$tmp/kept/checkpoint-1/trainer_state.json"
expect_rc 1 "$train" "$fx/toy" "${common[@]}" --max-steps 3 --save-steps 1 --resume --keep-denormals -o "$tmp/kept"
expect_grep "checkpoint-1/trainer_state.json: field 'cpu_denormals' must be \"flushed\" or \"kept\"" "$tmp/err" \
  "an unknown mode in the state"
finish
