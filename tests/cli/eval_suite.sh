# kalm-eval over every example task in one command, with a tiny fixture model
# (random Qwen2 weights + the tiny byte-level tokenizer), then bad task input.
. "$(dirname "$0")/lib.sh"
exe="$KALM_BIN/kalm-eval"
src="$KALM_SOURCE_DIR"
PY=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}

# The fixture model has no tokenizer; the tiny byte-level one (270 ids) fits its 512-row vocabulary.
model="$tmp/model"
cp -r "$src/tests/fixtures/models/qwen2_bidir" "$model"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/"tokenizer*.json "$model/"

expect_rc 0 "$exe" -m "$model" --max-length 64 --threads 2 --dim 64,16 --suite "$src/examples/eval/suite.txt" \
  --output-dir "$tmp/results" && {
  expect_grep "^task +type +split +metric +dim=64 +dim=16 +bm25 +tfidf" "$tmp/out" "table header"
  for t in LicenseRetrieval LicenseReranking LicenseSTS LicensePairs LicenseClassification LicenseClustering CoreutilsBitext; do
    expect_grep "^$t " "$tmp/out" "table row $t"
  done
  expect_grep "LicenseRetrieval: [0-9]+ texts embedded" "$tmp/err" "summary line"
  checks=$((checks + 1))
  if ! "$PY" - "$tmp/results" "$src" <<'PYEOF'
import json, math, os, sys
d = sys.argv[1]
files = sorted(os.listdir(d))
want = ["CoreutilsBitext.json", "LicenseClassification.json", "LicenseClustering.json", "LicensePairs.json",
        "LicenseRetrieval.json", "LicenseReranking.json", "LicenseSTS.json"]
if files != sorted(want):
    sys.exit(f"files {files}")
for f in files:
    r = json.load(open(os.path.join(d, f)))
    assert r["dims"] == [64, 16], (f, r["dims"])
    assert r["model"].endswith("model"), r["model"]
    assert r["evaluation_time"] > 0 and r["kalm_version"]
    entries = r["scores"]["test"]
    assert [e["dim"] for e in entries] == [64, 16]
    for e in entries:
        assert e["split"] == "test" and e["languages"], e
        m = e["main_score"]
        assert m is not None and -1 <= m <= 1 and m == e[r["main_metric"]], (f, e)
    if r["task_type"] in ("retrieval", "reranking"):
        b = r["bm25"]["test"]["main_score"]
        assert 0.5 < b <= 1, (f, b)  # word overlap makes these easy for BM25
        assert "tfidf" not in r
    else:
        assert "bm25" not in r
        t = r["tfidf"]["test"]
        assert t["features"] == ("char-trigrams" if r["task_type"] == "bitext" else "words"), (f, t)
        assert t["width"] > 20 and 0 < t["main_score"] <= 1 and t["main_score"] == t[r["main_metric"]], (f, t)
# Oracle: scikit-learn's TfidfVectorizer (defaults: smooth idf, l2 rows) on
# kalm's tokens (NFKC case-folded runs of letters and digits: for these ASCII
# texts, [^\W_]+ of the lower-cased text) and scipy's Spearman of the pairs'
# cosines give the STS baseline's score.
import re
import numpy as np
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
pairs = [json.loads(l) for l in open(os.path.join(sys.argv[2], "examples/eval/sts/test.jsonl"))]
texts = [p["sentence1"] for p in pairs] + [p["sentence2"] for p in pairs]
x = TfidfVectorizer(analyzer=lambda s: re.findall(r"[^\W_]+", s.lower())).fit_transform(texts).toarray()
n = len(pairs)
cos = (x[:n] * x[n:]).sum(1)  # rows are unit
want = spearmanr(cos, [p["score"] for p in pairs]).correlation
got = json.load(open(os.path.join(d, "LicenseSTS.json")))["tfidf"]["test"]
assert abs(got["cosine_spearman"] - want) < 1e-9, (got["cosine_spearman"], want)
assert got["width"] == x.shape[1], (got["width"], x.shape)
print(f"STS TF-IDF baseline: kalm {got['cosine_spearman']:.12f}, scikit-learn + scipy {want:.12f}")
retr = json.load(open(os.path.join(d, "LicenseRetrieval.json")))["scores"]["test"][0]
for k in ("ndcg_at_10", "map_at_10", "recall_at_100", "precision_at_10", "mrr_at_10"):
    assert 0 <= retr[k] <= 1, k
assert retr["recall_at_100"] == 1.0  # 39 documents, all ranked
PYEOF
  then echo "FAIL: results JSON"; failures=$((failures + 1)); fi
}
expect_no_file "$tmp/results/.none"

# One task directory by argument, default width, no BM25.
expect_rc 0 "$exe" -m "$model" --max-length 64 --threads 2 --no-bm25 -q "$src/examples/eval/sts" && {
  expect_grep "^LicenseSTS +sts +test +cosine_spearman +-?[0-9]+\.[0-9]{2}$" "$tmp/out" "sts row"
  checks=$((checks + 1))
  if [ -s "$tmp/err" ]; then echo "FAIL: --quiet printed to stderr"; failures=$((failures + 1)); fi
}

# Bad input: exit 1 naming the file (and line).
mkdir -p "$tmp/empty"
expect_rc 1 "$exe" -m "$model" "$tmp/empty" && expect_grep "^kalm-eval: error: .*empty/task.json: no such file" "$tmp/err"
mkdir -p "$tmp/unknown" && echo '{"type": "summarization"}' > "$tmp/unknown/task.json"
expect_rc 1 "$exe" -m "$model" "$tmp/unknown" && expect_grep "task.json: field 'type': unknown task type 'summarization'" "$tmp/err"
mkdir -p "$tmp/broken" && echo '{"type": "sts"}' > "$tmp/broken/task.json"
printf '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "a", "sentence2": "b", "score": 2}\n{"sentence1": "a", "sentence2"\n' > "$tmp/broken/test.jsonl"
expect_rc 1 "$exe" -m "$model" --max-length 64 --output-dir "$tmp/broken-out" "$tmp/broken" && {
  expect_grep "^kalm-eval: error: .*broken/test.jsonl:3: invalid JSON" "$tmp/err"
  expect_no_file "$tmp/broken-out/broken.json"
}
printf 'sts\nno-such-task\n' > "$tmp/suite.txt"
cp -r "$src/examples/eval/sts" "$tmp/sts"
expect_rc 1 "$exe" -m "$model" --suite "$tmp/suite.txt" && expect_grep "suite.txt:2: task directory .*no-such-task does not exist" "$tmp/err"
expect_rc 2 "$exe" "$src/examples/eval/sts" && expect_grep "^kalm-eval: error: --model is required" "$tmp/err"
expect_rc 2 "$exe" -m "$model" && expect_grep "^kalm-eval: error: no task" "$tmp/err"
expect_rc 2 "$exe" -m "$model" --dim 65 --max-length 64 "$src/examples/eval/sts" && expect_grep "^kalm-eval: error: --dim 65" "$tmp/err"
# mteb 2 (from PyPI, scripts/setup.sh) loads the results files as its own TaskResult.
expect_rc 0 "$exe" -m "$model" --max-length 64 --threads 2 -q --output-dir "$tmp/mteb" \
  "$src/examples/eval/sts" "$src/examples/eval/retrieval" && expect_rc 0 "$PY" - "$tmp/mteb" <<'PYEOF'
import json, sys
from pathlib import Path
import mteb
for f in sorted(Path(sys.argv[1]).glob("*.json")):
    raw = json.loads(f.read_text())
    r = mteb.TaskResult.from_disk(f, load_historic_data=False)
    assert r.task_name == raw["task_name"], (r.task_name, raw["task_name"])
    want = raw["scores"]["test"][0]["main_score"]
    assert abs(r.get_score() - want) < 1e-12, (f.name, r.get_score(), want)
    assert r.scores["test"][0]["hf_subset"] == "default"
print("mteb", mteb.__version__, "loaded", len(list(Path(sys.argv[1]).glob("*.json"))), "results")
PYEOF
expect_grep "loaded 2 results" "$tmp/out"

finish
