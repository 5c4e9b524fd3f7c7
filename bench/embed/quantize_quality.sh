#!/usr/bin/env bash
# bench/embed/quantize_quality.sh: what kalm-embed --quantize costs in retrieval
# quality (issue 15). For each retrieval task it embeds the queries and the
# corpus once per storage form and scores them with kalm-eval's precomputed-
# embedding path, against the float32 model run of kalm-eval -m (the
# reference; float32 files must reproduce it exactly, which the script checks):
#   float32 / float32      the reference, through files
#   int8 / int8            corpus ranges from the corpus itself, queries
#                          quantized with the same ranges (--quantize-ranges)
#   float32 / ubinary      sentence-transformers' rescoring: float queries
#                          against the corpus's sign bits
#   ubinary / ubinary      Hamming distance on both sides
# and prints the main score of each, its ratio to the reference, and the bytes
# one corpus vector takes.
#   bench/embed/quantize_quality.sh [BUILD_DIR [MODEL_DIR [TASK_DIR...]]]
# Defaults: build, runs/default/final and the default experiment's retrieval
# tasks (make -f Makefile.pipeline first). Queries carry no instruction (the
# default experiment's model embeds a query the same with or without one).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}; model=${2:-$src/runs/default/final}
shift $(( $# < 2 ? $# : 2 ))
tasks=("$@")
if [ ${#tasks[@]} -eq 0 ]; then
  for t in gcide-wn-paraphrase gcide-define wn-define; do tasks+=("$src/runs/default/data/eval/$t"); done
fi
python=${KALM_PYTHON:-$src/.venv/bin/python}
embed=$build/tools/kalm-embed; eval=$build/tools/kalm-eval
for f in "$embed" "$eval"; do [ -x "$f" ] || { echo "quantize_quality: no $f (build first)" >&2; exit 2; }; done
[ -f "$model/config.json" ] || { echo "quantize_quality: no model at $model" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/kalm-quant-quality.XXXXXX"); trap 'rm -rf "$dir"' EXIT

# main_score of the first split at the first width, from a kalm-eval results file
score() {
  "$python" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(next(iter(r["scores"].values()))[0]["main_score"])' "$1"
}

printf '%-22s %-20s %10s %8s %14s\n' task "queries / corpus" score ratio "bytes/vector"
for task in "${tasks[@]}"; do
  [ -f "$task/task.json" ] || { echo "quantize_quality: no task at $task" >&2; exit 2; }
  name=$(basename "$task"); w=$dir/$name; mkdir -p "$w/ref"
  "$eval" -q -m "$model" --no-instructions --no-baselines "$task" --output-dir "$w/ref" > /dev/null
  ref=$(score "$w/ref/"*.json)
  "$embed" -q -m "$model" "$task/queries.jsonl" -o "$w/q-f32.safetensors"
  "$embed" -q -m "$model" "$task/queries.jsonl" -o "$w/q-ubinary.safetensors" --quantize ubinary
  "$embed" -q -m "$model" "$task/corpus.jsonl" -o "$w/c-f32.safetensors"
  "$embed" -q -m "$model" "$task/corpus.jsonl" -o "$w/c-int8.safetensors" --quantize int8
  "$embed" -q -m "$model" "$task/corpus.jsonl" -o "$w/c-ubinary.safetensors" --quantize ubinary
  "$embed" -q -m "$model" "$task/queries.jsonl" -o "$w/q-int8.safetensors" --quantize int8 \
    --quantize-ranges "$w/c-int8.safetensors"
  rows=$(grep -c . "$task/corpus.jsonl")
  for pair in f32:f32 int8:int8 f32:ubinary ubinary:ubinary; do
    q=${pair%%:*}; c=${pair##*:}; out=$w/$q-$c; mkdir -p "$out"
    "$eval" -q --query-embeddings "$w/q-$q.safetensors" --corpus-embeddings "$w/c-$c.safetensors" \
      --no-baselines "$task" --output-dir "$out" > /dev/null
    s=$(score "$out/"*.json)
    # bytes per corpus vector: the embeddings tensor's share of the file (header and ranges aside)
    bytes=$("$python" - "$w/c-$c.safetensors" "$rows" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
a, b = h["embeddings"]["data_offsets"]; print((b - a) // int(sys.argv[2]))
PY
)
    if [ "$pair" = f32:f32 ] && [ "$s" != "$ref" ]; then
      echo "quantize_quality: $name: float32 files score $s, the model run $ref (they must agree)" >&2; exit 1
    fi
    printf '%-22s %-20s %10.4f %8.3f %14s\n' "$name" "${q/f32/float32} / ${c/f32/float32}" "$s" \
      "$("$python" -c "print($s / $ref if $ref else float('nan'))")" "$bytes"
  done
done
