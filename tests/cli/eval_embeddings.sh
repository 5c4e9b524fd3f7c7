# kalm-eval on precomputed embeddings (kalm-embed outputs) scores a retrieval
# task as the model path does.
. "$(dirname "$0")/lib.sh"
eval_exe="$KALM_BIN/kalm-eval"
embed_exe="$KALM_BIN/kalm-embed"
src="$KALM_SOURCE_DIR"
task="$src/examples/eval/retrieval"
PY=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}

model="$tmp/model"
cp -r "$src/tests/fixtures/models/qwen2_bidir" "$model"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/"tokenizer*.json "$model/"
instruction=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["instruction"])' "$task/task.json")

# mteb joins title and text; kalm-embed embeds "text", so build that corpus first.
$PY - "$task/corpus.jsonl" "$tmp/corpus.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        out.write(json.dumps({"id": r["id"], "text": (r["title"] + " " + r["text"]) if r.get("title") else r["text"]}) + "\n")
PYEOF
expect_rc 0 "$embed_exe" -q -m "$model" --max-length 64 --instruction "$instruction" "$task/queries.jsonl" -o "$tmp/q.safetensors"
expect_rc 0 "$embed_exe" -q -m "$model" --max-length 64 "$tmp/corpus.jsonl" -o "$tmp/c.safetensors"
expect_rc 0 "$eval_exe" -q --query-embeddings "$tmp/q.safetensors" --corpus-embeddings "$tmp/c.safetensors" \
  --output-dir "$tmp/pre" "$task" && expect_grep "^LicenseRetrieval +retrieval +test +ndcg_at_10 +[0-9]+\.[0-9]{2} +[0-9]+\.[0-9]{2}$" "$tmp/out"
# The bf16 and int8 (where the CPU has VNNI) first passes return f32's rankings: the same metrics to
# the last digit.
precisions=(bf16)
grep -qwE 'avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo && precisions+=(int8)
for precision in "${precisions[@]}"; do
  expect_rc 0 "$eval_exe" -q --query-embeddings "$tmp/q.safetensors" --corpus-embeddings "$tmp/c.safetensors" \
    --search-precision "$precision" --output-dir "$tmp/pre-$precision" "$task"
  checks=$((checks + 1))
  if ! $PY - "$tmp/pre/LicenseRetrieval.json" "$tmp/pre-$precision/LicenseRetrieval.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p))["scores"]["test"][0] for p in sys.argv[1:3])
a.pop("evaluation_time", None); b.pop("evaluation_time", None)
assert a == b, {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
PYEOF
  then echo "FAIL: --search-precision $precision changed the metrics"; failures=$((failures + 1)); fi
done
expect_rc 0 "$eval_exe" -q -m "$model" --max-length 64 --output-dir "$tmp/model-out" "$task"
expect_grep '"max_length": null,' "$tmp/pre/LicenseRetrieval.json" "results of precomputed embeddings"
expect_grep '"max_length": 64,' "$tmp/model-out/LicenseRetrieval.json" "results of a model run"
checks=$((checks + 1))
if ! $PY - "$tmp/pre/LicenseRetrieval.json" "$tmp/model-out/LicenseRetrieval.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p))["scores"]["test"][0] for p in sys.argv[1:3])
for k in ("ndcg_at_10", "map_at_100", "recall_at_10", "mrr_at_10"):
    assert abs(a[k] - b[k]) < 1e-3, (k, a[k], b[k])
assert a["dim"] == b["dim"] == 64
PYEOF
then echo "FAIL: precomputed and model scores differ"; failures=$((failures + 1)); fi

# Row counts must match the task's files; flags go in pairs; retrieval only.
expect_rc 1 "$eval_exe" --query-embeddings "$tmp/c.safetensors" --corpus-embeddings "$tmp/c.safetensors" "$task" &&
  expect_grep "^kalm-eval: error: --query-embeddings has 39 rows but .*queries.jsonl has 12 queries" "$tmp/err"
expect_rc 2 "$eval_exe" --query-embeddings "$tmp/q.safetensors" "$task" && expect_grep "go together" "$tmp/err"
expect_rc 2 "$eval_exe" --query-embeddings "$tmp/q.safetensors" --corpus-embeddings "$tmp/c.safetensors" "$src/examples/eval/sts" &&
  expect_grep "retrieval tasks only" "$tmp/err"
echo "not safetensors" > "$tmp/bad.safetensors"
expect_rc 1 "$eval_exe" --query-embeddings "$tmp/bad.safetensors" --corpus-embeddings "$tmp/c.safetensors" "$task" &&
  expect_grep "^kalm-eval: error: .*bad.safetensors" "$tmp/err"
finish
