#!/usr/bin/env bash
# Tokenizer throughput, kalm vs Hugging Face tokenizers, both on one core, same texts.
#
#   bench/tokenize/run.sh BUILD/bench/tokenize/kalm-bench-tokenize [MAX_BYTES]
#
# Needs the real Qwen3/Gemma3 tokenizer.json files in .oracle/tokenizers/<model>/
# (tests/fixtures/tokenizers/stage_real_tokenizers.sh; KALM_TOKENIZER_DIR overrides
# the folder) and the project's Python (KALM_PYTHON, default .venv/bin/python) with
# `tokenizers` from PyPI. The corpus: MAX_BYTES (default 8e6) of gettext translations
# from the locales under /usr/share/locale (make_corpus.py), in a temporary
# directory. Each figure is the best of 3 passes; HF is timed on one encode_batch
# call per pass with RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false.
# Both sides print a checksum of the ids: they must agree.
set -euo pipefail

bin=${1:?usage: run.sh PATH/TO/kalm-bench-tokenize [MAX_BYTES]}
max_bytes=${2:-8e6}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${KALM_PYTHON:-$root/.venv/bin/python}
tokdir=${KALM_TOKENIZER_DIR:-$root/.oracle/tokenizers}
for tool in "$python" taskset; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 1; }
done
for model in qwen3 gemma3; do
  [[ -f $tokdir/$model/tokenizer.json ]] ||
    { echo "run.sh: no $tokdir/$model/tokenizer.json: run tests/fixtures/tokenizers/stage_real_tokenizers.sh" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/kalm-bench-tokenize.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$python" "$here/make_corpus.py" "$work/texts.jsonl" "$max_bytes"

for model in qwen3 gemma3; do
  json=$tokdir/$model/tokenizer.json
  echo "== $model"
  kalm_line=$(taskset -c 0 "$bin" "$json" "$work/texts.jsonl")
  echo "$kalm_line"
  hf_line=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false taskset -c 0 \
    "$python" "$here/bench_hf.py" "$json" "$work/texts.jsonl")
  echo "$hf_line"
  kalm_tps=$(sed -E 's/.* ([0-9]+) tokens\/s.*/\1/' <<<"$kalm_line")
  kalm_sum=$(sed -E 's/.*checksum ([0-9]+).*/\1/' <<<"$kalm_line")
  hf_tps=$(sed -E 's/.* ([0-9]+) tokens\/s.*/\1/' <<<"$hf_line")
  hf_sum=$(sed -E 's/.*checksum ([0-9]+).*/\1/' <<<"$hf_line")
  [[ $hf_sum == "$kalm_sum" ]] || { echo "run.sh: $model ids differ between kalm and HF (checksum)" >&2; exit 1; }
  awk -v k="$kalm_tps" -v h="$hf_tps" -v m="$model" \
    'BEGIN { printf "%s: kalm/HF tokens/s ratio: %.2f\n", m, k / h }'
done
