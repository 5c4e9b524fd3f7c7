#!/usr/bin/env bash
# bench/eval: wall time of a retrieval evaluation over a generated corpus, and
# where the time goes (kalm-eval's per-task timing: load, encode, search,
# metrics, bm25), with the tiny fixture model (2-layer Qwen2, width 64) and the
# tiny byte-level tokenizer. The task generator and the summary run in the
# project's Python (KALM_PYTHON, default .venv/bin/python).
#   bench/eval/run.sh BUILD_DIR [DOCS QUERIES THREADS]
set -euo pipefail
build=${1:-build}; docs=${2:-100000}; queries=${3:-1000}; threads=${4:-2}
src=$(cd "$(dirname "$0")/../.." && pwd)
python=${KALM_PYTHON:-$src/.venv/bin/python}
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
"$python" "$src/bench/eval/gen_task.py" "$dir/task" "$docs" "$queries"
cp -r "$src/tests/fixtures/models/qwen2_bidir" "$dir/model"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/"tokenizer*.json "$dir/model/"
/usr/bin/time -f "peak_rss_kb %M" "$build/tools/kalm-eval" -m "$dir/model" --max-length 64 --threads "$threads" \
  --dim 64,16 --output-dir "$dir/out" "$dir/task" 2> "$dir/err" | tee "$dir/table"
cat "$dir/err" >&2
"$python" - "$dir/out/BenchRetrieval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["timing"]
total = r["evaluation_time"]
print(f"evaluation_time {total:.2f} s")
for k in ("load", "encode", "search", "metrics", "bm25"):
    print(f"  {k:8s} {t[k]:8.2f} s  {100 * t[k] / total:5.1f} %")
PY
