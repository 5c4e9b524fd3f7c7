#!/usr/bin/env bash
# The smallest real job kalm has until Makefile.pipeline lands (README, first
# command): train a tiny Qwen2-architecture model from scratch, with a
# SentencePiece tokenizer trained on the same data, on the toy training groups
# (tests/fixtures/train/toy), then score it on every example task in
# examples/eval, BM25 beside the retrieval and reranking scores.
#
#   examples/quickstart.sh [OUTPUT_DIR]     (default: quickstart-out)
#
# The toy set is tiny: expect scores near an untrained model's; the point is the
# chain of tools. KALM_BIN overrides where the tools are (default build/tools).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${KALM_BIN:-build/tools}
out=${1:-quickstart-out}
mkdir -p "$out"

"$bin/kalm-train" tests/fixtures/train/toy \
  --init-config tests/fixtures/train/tiny_qwen2.json --train-tokenizer 300 \
  --instructions tests/fixtures/train/instructions.json \
  --stage finetune --num-negatives 3 --batch-size 8 --epochs 4 --lr 1e-3 \
  --query-max-length 32 --passage-max-length 32 \
  -o "$out/model" --metrics "$out/train-metrics.jsonl"

"$bin/kalm-eval" -m "$out/model" --suite examples/eval/suite.txt --max-length 64 \
  --output-dir "$out/results" | tee "$out/results.txt"
echo "quickstart: model in $out/model, results in $out/results/ and $out/results.txt" >&2
