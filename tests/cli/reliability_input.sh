# Bad input and flags end with the right exit code and a short, exact message
# (issue 13): data problems exit 1, flag problems exit 2, and no message prints
# a 309-digit number.
source "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}
fx="$src/tests/fixtures/train"
train="$KALM_BIN/kalm-train"

# 1. Empty training data is a data error (1), naming the input.
: > "$tmp/empty.jsonl"
expect_rc 1 "$train" "$tmp/empty.jsonl" --init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 -q -o "$tmp/r1" &&
  expect_grep "^kalm-train: error: $tmp/empty.jsonl: no training groups \\(the input is empty\\)" "$tmp/err"

# 2. A tokenizer with more ids than the model has rows: exit 1, naming both.
model="$tmp/model"
cp -r "$src/tests/fixtures/models/qwen2_causal" "$model"
rm -f "$model/expected.safetensors"
big_tok="$src/.oracle/tokenizers/qwen3"
if [ -r "$big_tok/tokenizer.json" ]; then
  expect_rc 1 "$train" "$fx/toy" --init "$model" --tokenizer "$big_tok" -q --max-steps 1 -o "$tmp/r2" &&
    expect_grep "^kalm-train: error: $big_tok: the tokenizer has [0-9]+ ids but $model/config.json says vocab_size 512: they do not belong together" "$tmp/err"
fi
expect_rc 1 "$train" "$fx/toy" --init-config "$fx/tiny_qwen2.json" --tokenizer "$src/tests/fixtures/tokenizers/tiny_bytelevel" -q -o "$tmp/r3" &&
  expect_grep "tiny_qwen2.json: vocab_size 64 is smaller than the tokenizer's [0-9]+ ids" "$tmp/err"

# 3. A classification task with a single label: exit 1, not a score of 100.
mkdir -p "$tmp/onelabel"
echo '{"type": "classification", "n_experiments": 1, "samples_per_label": 2}' > "$tmp/onelabel/task.json"
printf '%s\n' '{"text": "a b", "label": "x"}' '{"text": "c d", "label": "x"}' > "$tmp/onelabel/train.jsonl"
printf '%s\n' '{"text": "a d", "label": "x"}' > "$tmp/onelabel/test.jsonl"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer.json" "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer_config.json" "$model/"
expect_rc 1 "$KALM_BIN/kalm-eval" -q -m "$model" "$tmp/onelabel" &&
  expect_grep "onelabel/train.jsonl: every text has the same label; classification needs at least two labels" "$tmp/err"

# 4. A 30-digit integer id is named for what it is.
printf '%s\n' '{"id": 123456789012345678901234567890, "text": "hello"}' > "$tmp/bigid.jsonl"
expect_rc 1 "$KALM_BIN/kalm-embed" -q -m "$model" "$tmp/bigid.jsonl" -o "$tmp/e.npy" &&
  expect_grep "bigid.jsonl:1: field \"id\" is the integer 12345678...7890 \\(30 characters\\), too large for a 64-bit integer id; write it as a string" "$tmp/err"

# 5. Range errors and --threads beyond the CPUs: exit 2, one short line, for every tool.
cores=$(nproc)
for tool in kalm-embed kalm-eval kalm-mine-negatives kalm-synth-filter kalm-train kalm-distill; do
  expect_rc 2 "$KALM_BIN/$tool" --threads -1e300 && {
    expect_grep "^$tool: error: --threads: must be positive, not -1e300$" "$tmp/err"
    checks=$((checks + 1)); [ "$(head -1 "$tmp/err" | wc -c)" -lt 200 ] || { echo "FAIL: $tool prints a long range error"; failures=$((failures + 1)); }
  }
  expect_rc 2 "$KALM_BIN/$tool" --threads $((cores * 16)) "$tmp/empty.jsonl" &&
    expect_grep "^$tool: error: --threads $((cores * 16)) is more than the $cores CPUs this process may use" "$tmp/err"
done
expect_rc 2 "$KALM_BIN/kalm-embed" -m "$model" --batch-tokens -1e300 "$tmp/bigid.jsonl" &&
  expect_grep "^kalm-embed: error: --batch-tokens: must be 0 or more, not -1e300$" "$tmp/err"
expect_rc 2 "$train" "$fx/toy" --epochs -5 -o "$tmp/r4" && expect_grep "^kalm-train: error: --epochs: must be" "$tmp/err"
finish
