# Non-finite values never pass silently (issue 13): a model with one NaN or
# infinite weight is refused by every tool that loads it, naming the file and the
# tensor; precomputed embeddings with a NaN are refused naming the row; and no
# tool writes a NaN anywhere.
. "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}

good="$tmp/good"
mkdir -p "$good"
cp -r "$src/tests/fixtures/models/qwen2_causal/." "$good/"
rm -f "$good/expected.safetensors"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer.json" \
   "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer_config.json" "$good/"

# poison DIR TENSOR INDEX VALUE: overwrite one element of a tensor of DIR's
# model.safetensors in place, byte for byte (no library that would refuse it).
poison() {
  $py - "$1/model.safetensors" "$2" "$3" "$4" <<'PY'
import json, struct, sys
path, name, index, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
raw = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
info = json.loads(raw[8:8 + n])[name]
width = {"F32": 4, "BF16": 2, "F16": 2}[info["dtype"]]
at = 8 + n + info["data_offsets"][0] + index * width
if info["dtype"] == "F32":
    raw[at:at + 4] = struct.pack("<f", value)
elif info["dtype"] == "BF16":
    raw[at:at + 2] = struct.pack("<f", value)[2:]
else:
    raw[at:at + 2] = struct.pack("<e", value)
open(path, "wb").write(raw)
PY
}

bad="$tmp/bad"
cp -r "$good" "$bad"
tensor=$($py - "$good/model.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
names = [k for k in json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]]) if "layers.0.mlp.up_proj" in k]
print(names[0])
PY
)
poison "$bad" "$tensor" 5 nan
inf="$tmp/inf"
cp -r "$good" "$inf"
poison "$inf" "$tensor" 0 -inf
want="model.safetensors: tensor '$tensor' has 1 non-finite value \\(NaN or infinity; the first at flat index"

printf '%s\n' '{"id": "a", "text": "hello world"}' '{"id": "b", "text": "the sky is blue"}' > "$tmp/corpus.jsonl"
printf '%s\n' '{"query": "hello", "pos": ["hello world"]}' '{"query": "sky", "pos": ["the sky is blue"]}' \
  '{"query": "sea", "pos": ["the sea is wide"]}' > "$tmp/groups.jsonl"

for model in "$bad" "$inf"; do
  expect_rc 1 "$KALM_BIN/kalm-embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/e.npy" && {
    expect_grep "$want" "$tmp/err"; expect_no_file "$tmp/e.npy"; }
  expect_rc 1 "$KALM_BIN/kalm-mine-negatives" -q --model "$model" --range 0-3 --negatives 1 -o "$tmp/m.jsonl" "$tmp/groups.jsonl" && {
    expect_grep "$want" "$tmp/err"; expect_no_file "$tmp/m.jsonl"; }
  expect_rc 1 "$KALM_BIN/kalm-synth-filter" -q --model "$model" --filter-topk 0 -o "$tmp/f.jsonl" "$tmp/groups.jsonl" && {
    expect_grep "$want" "$tmp/err"; expect_no_file "$tmp/f.jsonl"; }
  expect_rc 1 "$KALM_BIN/kalm-eval" -q -m "$model" "$src/examples/eval/sts" --output-dir "$tmp/r" && {
    expect_grep "$want" "$tmp/err"; expect_no_file "$tmp/r"; }
  expect_rc 1 "$KALM_BIN/kalm-train" soup -o "$tmp/soup" "$good" "$model" && {
    expect_grep "$want" "$tmp/err"; expect_no_file "$tmp/soup/model.safetensors"; }
done
expect_rc 1 "$KALM_BIN/kalm-train" -q --init "$bad" "$src/tests/fixtures/train/toy" -o "$tmp/run" && expect_grep "$want" "$tmp/err"

# Precomputed embeddings with one NaN: refused naming the row, by kalm-mine-negatives and kalm-eval.
expect_rc 0 "$KALM_BIN/kalm-embed" -q -m "$good" "$tmp/corpus.jsonl" -o "$tmp/e.safetensors"
cp "$tmp/e.safetensors" "$tmp/nan.safetensors"
$py - "$tmp/nan.safetensors" <<'PY'
import json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
info = json.loads(raw[8:8 + n])["embeddings"]
dim = info["shape"][1]
at = 8 + n + info["data_offsets"][0] + (dim + 3) * 4   # row 1, column 3
raw[at:at + 4] = struct.pack("<f", float("nan"))
open(sys.argv[1], "wb").write(raw)
PY
printf '%s\n' '{"query": "q1", "pos": ["hello world"]}' '{"query": "q2", "pos": ["the sky is blue"]}' > "$tmp/g2.jsonl"
expect_rc 1 "$KALM_BIN/kalm-mine-negatives" -q --query-embeddings "$tmp/nan.safetensors" \
  --corpus-embeddings "$tmp/e.safetensors" --range 0-2 --negatives 1 -o "$tmp/m2.jsonl" "$tmp/g2.jsonl" && {
  expect_grep "nan.safetensors: row 1 of tensor 'embeddings' is NaN or infinite" "$tmp/err"; expect_no_file "$tmp/m2.jsonl"; }
expect_rc 1 "$KALM_BIN/kalm-eval" -q --query-embeddings "$tmp/nan.safetensors" --corpus-embeddings "$tmp/e.safetensors" \
  "$src/examples/eval/retrieval" && expect_grep "nan.safetensors: row 1 of tensor 'embeddings' is NaN or infinite" "$tmp/err"
finish
