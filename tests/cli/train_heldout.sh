# A short from-scratch run on the default experiment's data (issue: "lowers
# held-out loss and raises nDCG@10 as measured by kalm-eval"): a 0-layer
# Qwen2 with its own SentencePiece tokenizer, trained for 150 steps on
# WordNet lemma -> definition pairs, against the same initialisation untrained.
# Held-out = synsets never trained on (examples/wordnet/prepare.sh): the
# InfoNCE loss on their (lemmas, definition) pairs, measured with a learning
# rate of 0 (the weights do not move), and kalm-eval's nDCG@10 on wn-define.
# Skips (77) when the dictionaries are not installed.
. "$(dirname "$0")/lib.sh"
require_dictionaries
B=$KALM_BIN
src=$KALM_SOURCE_DIR
PY=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}
data="$tmp/data"
expect_rc 0 "$src/examples/wordnet/prepare.sh" "$data" || { cat "$tmp/err"; finish; exit 1; }
"$src/examples/pipeline/qwen2-config.sh" 0 64 2 1 128 2000 512 > "$tmp/l0.json"

# Held-out groups: each wn-define query with its one relevant definition.
"$PY" - "$data/eval/wn-define" "$tmp/heldout.jsonl" <<'PYEOF'
import json, sys
task, out = sys.argv[1], sys.argv[2]
queries = {r["id"]: r["text"] for r in map(json.loads, open(task + "/queries.jsonl"))}
corpus = {r["id"]: r["text"] for r in map(json.loads, open(task + "/corpus.jsonl"))}
with open(out, "w") as f:
    for line in list(open(task + "/qrels/test.tsv"))[1:]:
        q, d, s = line.rstrip("\n").split("\t")
        if int(s) > 0:
            f.write(json.dumps({"query": queries[q], "pos": [corpus[d]], "task": "heldout", "type": "retrieval"}) + "\n")
PYEOF
common=(--threads 1 -q --seed 7 --query-max-length 32 --passage-max-length 64)
expect_rc 0 "$B/kalm-train" "$data/train/wn-lemma-def.jsonl.zst" --init-config "$tmp/l0.json" --train-tokenizer 2000 \
  --stage pretrain --batch-size 128 --max-steps 150 --lr 5e-3 --temperature 0.05 "${common[@]}" -o "$tmp/trained" ||
  cat "$tmp/err"
expect_rc 0 "$B/kalm-train" "$data/train/wn-lemma-def.jsonl.zst" --init-config "$tmp/l0.json" --tokenizer "$tmp/trained" \
  --stage pretrain --batch-size 8 --max-steps 1 --lr 0 "${common[@]}" -o "$tmp/untrained" || cat "$tmp/err"

# Mean held-out InfoNCE loss over 10 batches of 64 at learning rate 0.
heldout_loss() {
  "$B/kalm-train" "$tmp/heldout.jsonl" --init "$1" --stage pretrain --batch-size 64 --max-steps 10 --lr 0 \
    --temperature 0.05 "${common[@]}" -o "$tmp/probe-$(basename "$1")" --metrics "$tmp/probe-$(basename "$1").jsonl" &&
    "$PY" -c 'import json,sys; v=[json.loads(l)["loss"] for l in open(sys.argv[1])]; print(sum(v)/len(v))' \
      "$tmp/probe-$(basename "$1").jsonl"
}
loss_trained=$(heldout_loss "$tmp/trained")
loss_untrained=$(heldout_loss "$tmp/untrained")
echo "held-out loss: trained $loss_trained, untrained $loss_untrained"
checks=$((checks + 1))
if ! awk -v a="$loss_trained" -v b="$loss_untrained" 'BEGIN { exit !(a != "" && b != "" && a + 0.5 < b + 0) }'; then
  echo "FAIL: training did not lower the held-out loss by 0.5 ($loss_trained vs $loss_untrained)"; failures=$((failures + 1))
fi

ndcg() {
  "$B/kalm-eval" -m "$1" "$data/eval/wn-define" --no-instructions --max-length 64 --threads 1 -q |
    awk '$1 == "wn-define" { print $5 }'
}
ndcg_trained=$(ndcg "$tmp/trained")
ndcg_untrained=$(ndcg "$tmp/untrained")
echo "wn-define nDCG@10: trained $ndcg_trained, untrained $ndcg_untrained"
checks=$((checks + 1))
if ! awk -v a="$ndcg_trained" -v b="$ndcg_untrained" 'BEGIN { exit !(a != "" && b != "" && a + 0 > b + 3) }'; then
  echo "FAIL: training did not raise nDCG@10 by 3 points ($ndcg_trained vs $ndcg_untrained)"; failures=$((failures + 1))
fi
finish
