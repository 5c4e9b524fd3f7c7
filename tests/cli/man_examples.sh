#!/usr/bin/env bash
# Docs are tested (design.md 17): every man page's EXAMPLES run, on tiny fixtures.
#
# An example is an indented (4-space) code block in the "# EXAMPLES" section of
# man/*.md; its lines are a bash script (backslash continuations allowed; several
# commands in one block run in order). Each page's blocks run in order in one
# fresh workspace, with the tools first on PATH, under `bash -e -o pipefail`.
# A block passes when it exits 0, every file or directory named after -o,
# --output, --output-dir or --metrics (or after a '>' redirection) exists and is
# non-empty, every --rejects file exists, and a block that names no output file
# prints something on stdout.
#
# Skipping: a block that cannot run on tiny fixtures (e.g. distributed training)
# is marked by the line
#     <!-- example: skip: REASON -->
# directly before it (then a blank line, then the block). pandoc drops the
# comment from the roff page. Keep such blocks few.
#
# Blocks of pages this test may not edit are skipped by a substring of their
# text in external_skips (one a line); an entry that matches no block fails, so
# the list only shrinks.
#
# The workspace holds the names the examples use, made from fixtures:
#   model dirs (copies of a tiny random Qwen2 with the tiny byte-level tokenizer):
#     model, prev-model, finetuned, Qwen2-0.5B,
#     KaLM-embedding-multilingual-mini-instruct-v2.5, run2, run3
#   corpus.jsonl, corpus.jsonl.zst, queries.jsonl   examples/eval/retrieval texts
#   train.jsonl(.zst), synthetic.jsonl(.zst)        tests/fixtures/train/toy/retrieval.jsonl
#   data/, pairs/, scored/                          tests/fixtures/train/toy twice (groups with scores)
#   tasks.json, tiny.json                           tests/fixtures/train/{instructions,tiny_qwen2}.json
#   labelled.jsonl                                  examples/eval/classification/train.jsonl
#   personas.jsonl, qrels.txt, run.txt              tests/fixtures/man/
#   examples/                                       the repository's examples/
. "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}

# One tiny model with a tokenizer, copied under every model name. It is passed
# through a one-model soup so that its config.json is the one kalm writes: the
# soup example averages it with a model kalm-train trained from it, and soups
# need identical configs.
cp -r "$src/tests/fixtures/models/qwen2_bidir" "$tmp/tiny-src"
rm -f "$tmp/tiny-src/expected.safetensors"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/"tokenizer*.json "$tmp/tiny-src/"
tiny="$tmp/tiny-model"
"$KALM_BIN/kalm-train" soup -o "$tiny" "$tmp/tiny-src" 2>/dev/null || { echo "FAIL: could not prepare the tiny model"; exit 1; }

make_workspace() {
  local ws=$1 name
  mkdir -p "$ws"
  for name in model prev-model finetuned Qwen2-0.5B KaLM-embedding-multilingual-mini-instruct-v2.5 run2 run3; do
    cp -r "$tiny" "$ws/$name"
  done
  local toy="$src/tests/fixtures/train/toy" ret="$src/examples/eval/retrieval"
  cp "$ret/corpus.jsonl" "$ret/queries.jsonl" "$ws/"
  zstd -q "$ws/corpus.jsonl" -o "$ws/corpus.jsonl.zst"
  cp "$toy/retrieval.jsonl" "$ws/train.jsonl"
  cp "$toy/retrieval.jsonl" "$ws/synthetic.jsonl"
  zstd -q "$ws/train.jsonl" -o "$ws/train.jsonl.zst"
  zstd -q "$ws/synthetic.jsonl" -o "$ws/synthetic.jsonl.zst"
  # Twice the toy set (64 groups), so the tools' default --batch-size 48 fits.
  for name in data pairs scored; do
    mkdir "$ws/$name"
    for f in "$toy"/*.jsonl; do cat "$f" "$f" > "$ws/$name/$(basename "$f")"; done
  done
  cp "$src/tests/fixtures/train/instructions.json" "$ws/tasks.json"
  cp "$src/tests/fixtures/train/tiny_qwen2.json" "$ws/tiny.json"
  cp "$src/examples/eval/classification/train.jsonl" "$ws/labelled.jsonl"
  cp "$src/tests/fixtures/man/personas.jsonl" "$src/tests/fixtures/man/qrels.txt" "$src/tests/fixtures/man/run.txt" "$ws/"
  ln -s "$src/examples" "$ws/examples"
}

# extract_examples PAGE DIR: DIR/N.sh for the N-th example block, and DIR/N.skip
# (holding the marker) when the block is marked to be skipped.
extract_examples() {
  awk -v dir="$2" '
    function close_block() { if (open) { close(file); open = 0 } }
    /^# / { close_block(); in_ex = ($0 ~ /^# EXAMPLES[[:space:]]*$/); next }
    !in_ex { next }
    /^    / {
      if (!open) {
        n++; open = 1; file = dir "/" n ".sh"
        if (skip != "") { print skip > (dir "/" n ".skip"); close(dir "/" n ".skip") }
        skip = ""
      }
      print substr($0, 5) > file; next
    }
    /^[[:space:]]*$/ { next }
    { close_block(); skip = ($0 ~ /^<!-- example: skip:/) ? $0 : "" }
  ' "$1"
}

# named_outputs SCRIPT: "need-content PATH" or "exists PATH" per output the
# script's commands name.
named_outputs() {
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$1" | while read -ra words; do
    local i w next
    for ((i = 0; i + 1 < ${#words[@]}; i++)); do
      w=${words[i]}; next=${words[i + 1]//[\"\']/}
      [ "$next" = "-" ] && continue
      case $w in
        -o|--output|--output-dir|--metrics|'>') echo "need-content $next" ;;
        --rejects) echo "exists $next" ;;
      esac
    done
  done
}

# kalm-train.1.md is edited elsewhere; its pretraining example asks for a
# tokenizer vocabulary larger than the toy texts can fill.
external_skips='--train-tokenizer 8000'
: > "$tmp/skips_used"

pages=0 ran=0 skipped=0
for page in "$src"/man/*.1.md; do
  pages=$((pages + 1))
  name=$(basename "$page" .1.md)
  blocks="$tmp/blocks-$name"
  ws="$tmp/ws-$name"
  mkdir -p "$blocks"
  extract_examples "$page" "$blocks"
  make_workspace "$ws"
  n=$(find "$blocks" -name '*.sh' | wc -l)
  checks=$((checks + 1))
  if [ "$n" -eq 0 ]; then
    echo "FAIL: $name: no example found under # EXAMPLES"; failures=$((failures + 1)); continue
  fi
  for ((k = 1; k <= n; k++)); do
    script="$blocks/$k.sh"
    if [ -f "$blocks/$k.skip" ]; then
      skipped=$((skipped + 1)); echo "skip: $name example $k: $(cat "$blocks/$k.skip")"; continue
    fi
    if ext=$(grep -oF -- "$external_skips" "$script" | head -1) && [ -n "$ext" ]; then
      echo "$ext" >> "$tmp/skips_used"
      skipped=$((skipped + 1)); echo "skip: $name example $k (external_skips: $ext)"; continue
    fi
    ran=$((ran + 1))
    checks=$((checks + 1))
    if ! (cd "$ws" && PATH="$KALM_BIN:$PATH" bash -e -o pipefail "$script") > "$tmp/out" 2> "$tmp/err"; then
      echo "FAIL: $name example $k exited non-zero:"; sed 's/^/  | /' "$script"
      tail -5 "$tmp/err" | sed 's/^/  stderr: /'
      failures=$((failures + 1)); continue
    fi
    named_outputs "$script" > "$tmp/outputs"
    if [ ! -s "$tmp/outputs" ] && [ ! -s "$tmp/out" ]; then
      echo "FAIL: $name example $k names no output file and prints nothing"; failures=$((failures + 1))
    fi
    while read -r kind path; do
      checks=$((checks + 1))
      p="$ws/$path"
      if [ "$kind" = exists ] && [ -e "$p" ]; then continue; fi
      if [ -f "$p" ] && [ -s "$p" ]; then continue; fi
      if [ -d "$p" ] && [ -n "$(ls -A "$p")" ]; then continue; fi
      echo "FAIL: $name example $k: output $path is missing or empty"; failures=$((failures + 1))
    done < "$tmp/outputs"
  done
done
while IFS= read -r ext; do
  checks=$((checks + 1))
  grep -qxF -- "$ext" "$tmp/skips_used" ||
    { echo "FAIL: external_skips entry '$ext' matches no example; remove it"; failures=$((failures + 1)); }
done <<< "$external_skips"
echo "$pages pages, $ran examples run, $skipped skipped"
finish
