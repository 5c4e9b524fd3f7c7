# kalm-embed against sentence-transformers 6 / transformers 5 on checkpoints they
# saved (tests/fixtures/models_v5, gen_fixtures.py): the v5 config layout
# (rope_parameters per layer type, dtype, is_causal / use_bidirectional_attention),
# sentence-transformers 6's module and pooling files, include_prompt=false with
# a prompt, last-token pooling under left and right padding. kalm's unnormalised
# embeddings must equal sentence-transformers' encode() to float32 rounding.
. "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}
embed="$KALM_BIN/kalm-embed"
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}
fx="$src/tests/fixtures/models_v5"

compare() {  # NAME VARIANT OUT.npy: max |kalm - ST| relative to the row's norm <= 1e-5
  expect_rc 0 "$py" - "$fx/expected.safetensors" "$1.$2" "$3" <<'PY'
import sys, numpy as np, safetensors.numpy
want = safetensors.numpy.load_file(sys.argv[1])[sys.argv[2]]
got = np.load(sys.argv[3])
assert got.shape == want.shape, (got.shape, want.shape)
err = (np.abs(got - want).max(axis=1) / np.linalg.norm(want, axis=1)).max()
assert err <= 1e-5, f"{sys.argv[2]}: relative error {err:.3g}"
PY
}

for name in qwen2_causal_mean_noprompt qwen2_bidir_last gemma3_causal_last_left gemma3_bidir_mean_noprompt; do
  expect_rc 0 "$embed" -q -m "$fx/$name" --no-normalize "$fx/texts.jsonl" -o "$tmp/$name.plain.npy" &&
    compare "$name" plain "$tmp/$name.plain.npy"
  expect_rc 0 "$embed" -q -m "$fx/$name" --no-normalize --prompt query "$fx/texts.jsonl" -o "$tmp/$name.query.npy" &&
    compare "$name" query "$tmp/$name.query.npy"
done

# include_prompt=false really leaves the prompt out: with it pooled, the numbers differ.
mkdir -p "$tmp/with_prompt"
cp -r "$fx/qwen2_causal_mean_noprompt/." "$tmp/with_prompt/"
sed -i 's/"include_prompt": false/"include_prompt": true/' "$tmp/with_prompt/1_Pooling/config.json"
expect_rc 0 "$embed" -q -m "$tmp/with_prompt" --no-normalize --prompt query "$fx/texts.jsonl" -o "$tmp/wp.npy"
expect_rc 0 "$py" -c "
import numpy as np
a = np.load('$tmp/wp.npy'); b = np.load('$tmp/qwen2_causal_mean_noprompt.query.npy')
assert np.abs(a - b).max() > 1e-2, np.abs(a - b).max()"

# A text that is all prompt once truncated leaves nothing to pool: exit 1, named.
expect_rc 1 "$embed" -q -m "$fx/qwen2_causal_mean_noprompt" --prompt query --max-length 4 "$fx/texts.jsonl" \
  -o "$tmp/none.npy"
expect_grep "all prompt, which the model's pooling leaves out" "$tmp/err"
expect_no_file "$tmp/none.npy"

# A RoPE type kalm does not implement is refused with the file and key, not run with defaults.
mkdir -p "$tmp/yarn"
cp -r "$fx/qwen2_bidir_last/." "$tmp/yarn/"
"$py" - "$tmp/yarn/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1000000.0}
json.dump(c, open(sys.argv[1], "w"))
PY
expect_rc 1 "$embed" -q -m "$tmp/yarn" "$fx/texts.jsonl" -o "$tmp/yarn.npy"
expect_grep "config.json: rope_parameters.rope_type: unsupported rope type \"yarn\"" "$tmp/err"

# A module kalm does not run (Dense changes every vector) is refused, not skipped.
mkdir -p "$tmp/dense"
cp -r "$fx/qwen2_bidir_last/." "$tmp/dense/"
"$py" - "$tmp/dense/modules.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m.append({"idx": 2, "name": "2", "path": "2_Dense",
          "type": "sentence_transformers.sentence_transformer.modules.dense.Dense"})
json.dump(m, open(sys.argv[1], "w"))
PY
expect_rc 1 "$embed" -q -m "$tmp/dense" "$fx/texts.jsonl" -o "$tmp/dense.npy"
expect_grep "modules.json: \[2\].type: module \"sentence_transformers.sentence_transformer.modules.dense.Dense\" is not supported" "$tmp/err"

# kalm-mine-negatives leaves the instruction out of the pooling too: its
# positive scores are the cosines of kalm-embed's instructed queries (checked
# against sentence-transformers above) and its passages; with the prompt
# pooled (include_prompt true) they differ.
cat > "$tmp/groups.jsonl" <<'J'
{"query": "what is the capital of france", "pos": ["paris is the capital of france"]}
{"query": "hello world", "pos": ["a friendly greeting to everyone"]}
{"query": "numbers 12345", "pos": ["digits and more digits"]}
{"query": "the lazy dog", "pos": ["a dog that sleeps all day"]}
J
mine="$KALM_BIN/kalm-mine-negatives"
for variant in noprompt:"$fx/qwen2_causal_mean_noprompt" withprompt:"$tmp/with_prompt"; do
  name=${variant%%:*} dir=${variant#*:}
  expect_rc 0 "$mine" -q --model "$dir" --instruction "Given a query" --range 0-3 --negatives 1 --scores \
    -o "$tmp/mined-$name.jsonl" "$tmp/groups.jsonl" || continue
  "$py" -c "
import json, sys
for l in open('$tmp/groups.jsonl'):
    print(json.dumps({'text': json.loads(l)['query']}))" > "$tmp/q.jsonl"
  "$py" -c "
import json, sys
for l in open('$tmp/groups.jsonl'):
    print(json.dumps({'text': json.loads(l)['pos'][0]}))" > "$tmp/p.jsonl"
  expect_rc 0 "$embed" -q -m "$dir" --instruction "Given a query" "$tmp/q.jsonl" -o "$tmp/q-$name.npy"
  expect_rc 0 "$embed" -q -m "$dir" "$tmp/p.jsonl" -o "$tmp/p-$name.npy"
done
expect_rc 0 "$py" - "$tmp" <<'PY'
import json, sys, numpy as np
d = sys.argv[1]
scores = {}
for name in ("noprompt", "withprompt"):
    mined = [json.loads(l)["pos_scores"][0] for l in open(f"{d}/mined-{name}.jsonl")]
    q, p = np.load(f"{d}/q-{name}.npy"), np.load(f"{d}/p-{name}.npy")
    want = (q * p).sum(axis=1)
    assert np.abs(np.array(mined) - want).max() <= 1e-5, (name, mined, want)
    scores[name] = np.array(mined)
assert np.abs(scores["noprompt"] - scores["withprompt"]).max() > 1e-3, scores
PY

# kalm-eval pools instructed queries the same way: its scores from the model
# equal its scores from kalm-embed's instructed embeddings (which equal
# sentence-transformers' above), metric for metric.
task="$tmp/task"
mkdir -p "$task/qrels"
"$py" - "$tmp/groups.jsonl" "$fx/texts.jsonl" "$task" <<'PY'
import json, sys
groups, texts, task = sys.argv[1:4]
rows = [json.loads(l) for l in open(groups)]
with open(f"{task}/queries.jsonl", "w") as q, open(f"{task}/corpus.jsonl", "w") as c, \
        open(f"{task}/qrels/test.tsv", "w") as r:
    r.write("query-id\tcorpus-id\tscore\n")
    for i, g in enumerate(rows):
        q.write(json.dumps({"id": f"q{i}", "text": g["query"]}) + "\n")
        c.write(json.dumps({"id": f"d{i}", "text": g["pos"][0]}) + "\n")
        r.write(f"q{i}\td{i}\t1\n")
    for j, l in enumerate(open(texts)):
        c.write(json.dumps({"id": f"t{j}", "text": json.loads(l)["text"]}) + "\n")
json.dump({"type": "retrieval", "name": "toy", "instruction": "Given a query"}, open(f"{task}/task.json", "w"))
PY
model="$fx/qwen2_causal_mean_noprompt"
expect_rc 0 "$KALM_BIN/kalm-eval" -q -m "$model" "$task" --output-dir "$tmp/eval-model"
expect_rc 0 "$embed" -q -m "$model" --instruction "Given a query" "$task/queries.jsonl" -o "$tmp/eq.safetensors"
expect_rc 0 "$embed" -q -m "$model" "$task/corpus.jsonl" -o "$tmp/ec.safetensors"
expect_rc 0 "$KALM_BIN/kalm-eval" -q "$task" --query-embeddings "$tmp/eq.safetensors" \
  --corpus-embeddings "$tmp/ec.safetensors" --output-dir "$tmp/eval-emb"
expect_rc 0 "$py" - "$tmp/eval-model/toy.json" "$tmp/eval-emb/toy.json" <<'PY'
import json, sys
a, b = (json.load(open(f))["scores"]["test"][0] for f in sys.argv[1:3])
keys = [k for k in a if isinstance(a[k], float)]
assert len(keys) > 10, keys
bad = {k: (a[k], b[k]) for k in keys if abs(a[k] - b[k]) > 1e-6}
assert not bad, bad
print("kalm-eval: instructed scores from the include_prompt=false model equal those from its embeddings:", len(keys), "metrics")
PY

# A text that is all instruction once truncated: kalm-eval exits 1 naming the file.
expect_rc 1 "$KALM_BIN/kalm-eval" -q -m "$model" "$task" --max-length 4 --output-dir "$tmp/eval-short"
expect_grep "queries.jsonl: text [0-9]+ has [0-9]+ tokens, all of them its instruction" "$tmp/err" "kalm-eval all-instruction text"
expect_no_file "$tmp/eval-short/toy.json"

finish
