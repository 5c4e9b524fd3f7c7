# --max-length defaults to the limit sentence-transformers truncates to
# (sentence_bert_config.json's max_seq_length, else the tokenizer's
# model_max_length capped at max_position_embeddings), else 512.
# tests/fixtures/export/model was written by kalm-train with max_seq_length 24.
. "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}
embed="$KALM_BIN/kalm-embed"
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}
model="$src/tests/fixtures/export/model"

long="the cat sleeps on the mat and the dog runs in the park while the fish swims in the river all day long"
printf '{"id": "long", "text": "%s %s"}\n{"id": "short", "text": "a"}\n' "$long" "$long" > "$tmp/in.jsonl"

# metadata FILE: the safetensors __metadata__ max_length.
metadata() {
  $py - "$1" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
print(json.loads(raw[8:8 + n])["__metadata__"]["max_length"])
PY
}
# same_rows A.npy B.npy ROWS...: exit 0 when the rows are bit-identical; "differ" inverts.
rows_cmp() {
  $py - "$@" <<'PY'
import sys, numpy as np
mode, a, b = sys.argv[1:4]
a, b = np.load(a), np.load(b)
rows = [int(r) for r in sys.argv[4:]]
d = np.abs(a[rows] - b[rows]).max()
sys.exit(0 if (d == 0.0) == (mode == "same") else 1)
PY
}
check() {  # check WHAT CMD...: count a check, report a failure
  local what=$1; shift
  checks=$((checks + 1))
  "$@" || { echo "FAIL: $what"; failures=$((failures + 1)); }
}

# 1. kalm-embed: no flag = --max-length 24; --max-length 512 sees the whole text.
expect_rc 0 "$embed" -q -m "$model" "$tmp/in.jsonl" -o "$tmp/def.safetensors"
expect_rc 0 "$embed" -q -m "$model" "$tmp/in.jsonl" -o "$tmp/def.npy"
expect_rc 0 "$embed" -q -m "$model" --max-length 24 "$tmp/in.jsonl" -o "$tmp/m24.npy"
expect_rc 0 "$embed" -q -m "$model" --max-length 512 "$tmp/in.jsonl" -o "$tmp/m512.safetensors"
expect_rc 0 "$embed" -q -m "$model" --max-length 512 "$tmp/in.jsonl" -o "$tmp/m512.npy"
check "default = --max-length 24" rows_cmp same "$tmp/def.npy" "$tmp/m24.npy" 0 1
check "default differs from 512 on the long text" rows_cmp differ "$tmp/def.npy" "$tmp/m512.npy" 0
check "the short text is the same either way" rows_cmp same "$tmp/def.npy" "$tmp/m512.npy" 1
check "metadata records 24" test "$(metadata "$tmp/def.safetensors")" = 24
check "metadata records 512" test "$(metadata "$tmp/m512.safetensors")" = 512
# Token ids alone (no model run) follow the same rule.
expect_rc 0 "$embed" -q -m "$model" --output-format tokens "$tmp/in.jsonl" -o "$tmp/ids.jsonl"
expect_rc 0 "$embed" -q -m "$model" --output-format tokens --max-length 512 "$tmp/in.jsonl" -o "$tmp/ids512.jsonl"
check "tokens: 24 ids by default, more with 512" $py -c "
import json, sys
a = [len(json.loads(l)['ids']) for l in open('$tmp/ids.jsonl')]
b = [len(json.loads(l)['ids']) for l in open('$tmp/ids512.jsonl')]
sys.exit(0 if a[0] == 24 and b[0] > 24 and a[1] == b[1] < 24 else 1)"

# 2. --no-truncate names the limit in effect and where it came from.
expect_rc 1 "$embed" -q -m "$model" --no-truncate "$tmp/in.jsonl" -o "$tmp/x.npy" &&
  expect_grep "in.jsonl:1: text exceeds the token limit, max_seq_length 24 from .*model/sentence_bert_config.json \(--no-truncate\)" "$tmp/err"
expect_no_file "$tmp/x.npy"
expect_rc 1 "$embed" -q -m "$model" --no-truncate --max-length 10 "$tmp/in.jsonl" -o "$tmp/x.npy" &&
  expect_grep "text exceeds the token limit, --max-length 10 \(--no-truncate\)" "$tmp/err"
expect_rc 0 "$embed" -q -m "$model" --no-truncate --max-length 512 "$tmp/in.jsonl" -o "$tmp/nt.npy"
check "--no-truncate with room = --max-length 512" rows_cmp same "$tmp/nt.npy" "$tmp/m512.npy" 0 1

# 3. --help says where the default comes from; --dump-config/--config round-trip.
expect_rc 0 "$embed" --help && expect_grep "max-length.*sentence-transformers' limit for the model, else 512" "$tmp/out"
expect_rc 0 "$embed" -m "$model" --dump-config && {
  check "dump-config leaves the default out" bash -c "! grep -q '^max-length' '$tmp/out'"
  cp "$tmp/out" "$tmp/def.toml"
}
expect_rc 0 "$embed" -q --config "$tmp/def.toml" "$tmp/in.jsonl" -o "$tmp/cfg.npy"
check "--config with the default = 24" rows_cmp same "$tmp/cfg.npy" "$tmp/m24.npy" 0 1
expect_rc 0 "$embed" -m "$model" --max-length 512 --dump-config && {
  expect_grep "^max-length=512$" "$tmp/out"
  cp "$tmp/out" "$tmp/512.toml"
}
expect_rc 0 "$embed" -q --config "$tmp/512.toml" "$tmp/in.jsonl" -o "$tmp/cfg512.npy"
check "--config max-length=512" rows_cmp same "$tmp/cfg512.npy" "$tmp/m512.npy" 0 1
expect_rc 2 "$embed" -q -m "$model" --max-length 0 "$tmp/in.jsonl" -o "$tmp/x.npy"

# 4. No max_seq_length in sentence_bert_config.json (none written, as
#    sentence-transformers 6 does, or null): sentence-transformers' cap, the
#    tokenizer's model_max_length (24 here) capped at max_position_embeddings
#    (128); without it, 128; without modules.json (a plain transformers
#    directory), kalm's default 512.
plain="$tmp/plain"
cp -r "$model" "$plain"
rm "$plain/sentence_bert_config.json"
expect_rc 0 "$embed" -q -m "$plain" "$tmp/in.jsonl" -o "$tmp/plain.safetensors"
check "no max_seq_length: the tokenizer's model_max_length 24" test "$(metadata "$tmp/plain.safetensors")" = 24
echo '{"max_seq_length": null, "do_lower_case": false}' > "$plain/sentence_bert_config.json"
expect_rc 0 "$embed" -q -m "$plain" "$tmp/in.jsonl" -o "$tmp/null.safetensors"
check "null max_seq_length: 24" test "$(metadata "$tmp/null.safetensors")" = 24
sed -i 's/"model_max_length": 24/"model_max_length": 1000000000000000019884624838656/' "$plain/tokenizer_config.json"
expect_rc 0 "$embed" -q -m "$plain" "$tmp/in.jsonl" -o "$tmp/cap.safetensors"
check "no tokenizer limit: max_position_embeddings 128" test "$(metadata "$tmp/cap.safetensors")" = 128
rm "$plain/modules.json"
expect_rc 0 "$embed" -q -m "$plain" "$tmp/in.jsonl" -o "$tmp/plain.npy"
check "no modules.json: default = --max-length 512" rows_cmp same "$tmp/plain.npy" "$tmp/m512.npy" 0 1

# 5. A bad sentence_bert_config.json: exit 1 naming the file, no output.
bad() {  # bad JSON PATTERN [extra flags]
  local json=$1 pattern=$2; shift 2
  echo "$json" > "$plain/sentence_bert_config.json"
  expect_rc 1 "$embed" -q -m "$plain" "$@" "$tmp/in.jsonl" -o "$tmp/bad.npy" &&
    expect_grep "^kalm-embed: error: .*plain/sentence_bert_config.json: $pattern" "$tmp/err"
  expect_no_file "$tmp/bad.npy"
}
bad '{"max_seq_length": 0}' "max_seq_length must be a positive integer, got 0"
bad '{"max_seq_length": -3}' "max_seq_length must be a positive integer, got -3"
bad '{"max_seq_length": "512"}' "max_seq_length: expected an integer"
bad '{"max_seq_length": 2.5}' "max_seq_length: expected an integer"
bad '{"max_seq_length": 24, "do_lower_case": true}' "do_lower_case is true"
bad '{"max_seq_length": 24, "do_lower_case": true}' "do_lower_case is true" --max-length 24
bad '{"max_seq_length": 0}' "max_seq_length must be a positive integer" --output-format tokens
bad '{"max_seq_length": ' "invalid JSON"

# 6. kalm-eval: the STS score with no flag equals --max-length 24's and differs from 512's.
for m in def 24 512; do
  flag=(); [ "$m" = def ] || flag=(--max-length "$m")
  expect_rc 0 "$KALM_BIN/kalm-eval" -q -m "$model" "${flag[@]}" --no-bm25 --output-dir "$tmp/eval-$m" "$src/examples/eval/sts"
done
score() { $py -c "import json; print(repr(json.load(open('$tmp/eval-$1/LicenseSTS.json'))['scores']['test'][0]['main_score']))"; }
check "kalm-eval: default = --max-length 24" test "$(score def)" = "$(score 24)"
check "kalm-eval: default differs from 512" test "$(score def)" != "$(score 512)"
# ... and the results file records the limit in effect.
expect_grep '"max_length": 24,' "$tmp/eval-def/LicenseSTS.json" "kalm-eval results (default)"
expect_grep '"max_length": 512,' "$tmp/eval-512/LicenseSTS.json" "kalm-eval results (--max-length 512)"

# 7. kalm-mine-negatives: the sidecar records the limit used; the scores follow it.
printf '{"query": "%s", "pos": ["%s one"], "neg": ["%s two", "%s three"]}\n' "$long" "$long" "$long" "$long" > "$tmp/groups.jsonl"
printf '{"query": "what is a cat", "pos": ["a cat is a small animal"], "neg": ["dogs bark", "%s"]}\n' "$long" >> "$tmp/groups.jsonl"
for m in def 24 512; do
  flag=(); [ "$m" = def ] || flag=(--max-length "$m")
  expect_rc 0 "$KALM_BIN/kalm-mine-negatives" -q -m "$model" "${flag[@]}" --range 0-10 --negatives 2 --scores \
    --shortfall pad -o "$tmp/mine-$m.jsonl" "$tmp/groups.jsonl"
done
expect_grep '"max_length": 24[,}]' "$tmp/mine-def.jsonl.meta.json" "mine meta (default)"
expect_grep '"max_length": 512[,}]' "$tmp/mine-512.jsonl.meta.json" "mine meta (512)"
check "kalm-mine-negatives: default = --max-length 24" cmp -s "$tmp/mine-def.jsonl" "$tmp/mine-24.jsonl"
check "kalm-mine-negatives: scores differ with 512" bash -c "! cmp -s '$tmp/mine-def.jsonl' '$tmp/mine-512.jsonl'"

# 8. kalm-synth-filter records the limit too (null without a model).
printf '{"query": "what is a cat", "pos": ["a cat is a small animal"]}\n' > "$tmp/f.jsonl"
expect_rc 0 "$KALM_BIN/kalm-synth-filter" -q -m "$model" --filter-topk 5 -o "$tmp/f-def.jsonl" "$tmp/f.jsonl"
expect_grep '"max_length": 24[,}]' "$tmp/f-def.jsonl.meta.json" "filter meta (default)"
expect_rc 0 "$KALM_BIN/kalm-synth-filter" -q -m "$model" --max-length 100 --filter-topk 5 -o "$tmp/f-100.jsonl" "$tmp/f.jsonl"
expect_grep '"max_length": 100[,}]' "$tmp/f-100.jsonl.meta.json" "filter meta (100)"
expect_rc 0 "$KALM_BIN/kalm-synth-filter" -q -o "$tmp/f-none.jsonl" "$tmp/f.jsonl"
expect_grep '"max_length": null[,}]' "$tmp/f-none.jsonl.meta.json" "filter meta (no model)"

finish
