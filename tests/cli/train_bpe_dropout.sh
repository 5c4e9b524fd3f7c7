# kalm-train --bpe-dropout: the same seed gives the same weights, dropout
# changes what the model sees (other weights than without it) but not the
# tokenizer it saves, a resumed run ends where the straight run ended, a
# resume with another rate is refused, and bad values and tokenizers without
# merges are usage errors naming the flag.
source "$(dirname "$0")/lib.sh"
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
# Instructions on queries with include_prompt false: the prompt's ids must stay
# whole under dropout for the pooling to leave exactly them out.
common=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 --instructions "$fx/instructions.json"
        --include-prompt false --batch-size 8 --query-max-length 48 --passage-max-length 24 --lr 1e-3
        --threads 1 -q --seed 5 --max-steps 3)

same() {  # same DIR1 DIR2 FILE what
  checks=$((checks + 1))
  cmp -s "$tmp/$1/$3" "$tmp/$2/$3" || { echo "FAIL: $4: $3 differs"; failures=$((failures + 1)); }
}

expect_rc 0 "$train" "$fx/toy" "${common[@]}" --bpe-dropout 0.3 -o "$tmp/a"
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --bpe-dropout 0.3 -o "$tmp/b"
same a b model.safetensors "two runs with the same seed and dropout"
expect_rc 0 "$train" "$fx/toy" "${common[@]}" -o "$tmp/plain"
checks=$((checks + 1))
if cmp -s "$tmp/a/model.safetensors" "$tmp/plain/model.safetensors"; then
  echo "FAIL: --bpe-dropout 0.3 trained the same weights as no dropout"; failures=$((failures + 1))
fi
same a plain tokenizer.json "the saved tokenizer (no dropout in it)"
expect_grep '"dropout": null' "$tmp/a/tokenizer.json" "the saved tokenizer's dropout"

# Stop after step 1, resume: the straight run's weights.
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --bpe-dropout 0.3 --save-steps 1 --stop-at-step 1 -o "$tmp/r"
expect_grep '"bpe_dropout": 0.29999999999999999' "$tmp/r/checkpoint-1/trainer_state.json" "the checkpoint's state"
expect_rc 2 "$train" "$fx/toy" "${common[@]}" --bpe-dropout 0.1 --save-steps 1 --resume -o "$tmp/r"
expect_grep 'bpe-dropout' "$tmp/err" "resuming with another rate"
expect_rc 0 "$train" "$fx/toy" "${common[@]}" --bpe-dropout 0.3 --save-steps 1 --resume -o "$tmp/r"
same a r model.safetensors "the resumed run"

# Bad values; a SentencePiece (unigram) tokenizer has no merges to skip.
expect_rc 2 "$train" "$fx/toy" "${common[@]}" --bpe-dropout 1.5 -o "$tmp/bad"
expect_grep 'bpe-dropout' "$tmp/err" "--bpe-dropout 1.5"
expect_rc 2 "$train" "$fx/toy" "${common[@]}" --bpe-dropout -0.1 -o "$tmp/bad"
uni=("${common[@]}")
uni[3]=120  # --train-tokenizer: the toy data has too few pieces for 300
expect_rc 2 "$train" "$fx/toy" "${uni[@]}" --tokenizer-model unigram --bpe-dropout 0.1 -o "$tmp/uni"
expect_grep 'bpe-dropout: BPE dropout needs a BPE tokenizer' "$tmp/err" "dropout with a unigram tokenizer"
expect_no_file "$tmp/uni/model.safetensors"
finish
