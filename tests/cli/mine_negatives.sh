# kalm-mine-negatives end to end: hand-built precomputed embeddings pin the
# window, exclusions, kept negatives, scores and the ranking filter; a tiny
# model dir covers the embedding path and --from-labels; bad input fails cleanly.
. "$(dirname "$0")/lib.sh"
exe="$KALM_BIN/kalm-mine-negatives"
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}
src=${KALM_SOURCE_DIR:?}

# write_emb FILE 'rows as JSON': a safetensors file with tensor "embeddings" (f32).
write_emb() {
  $py - "$1" "$2" <<'PY'
import json, struct, sys
rows = json.loads(sys.argv[2])
data = b"".join(struct.pack("<%df" % len(r), *r) for r in rows)
hdr = json.dumps({"embeddings": {"dtype": "F32", "shape": [len(rows), len(rows[0])], "data_offsets": [0, len(data)]}}).encode()
hdr += b" " * ((8 - len(hdr) % 8) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(hdr)) + hdr + data)
PY
}

# Pool = union of pos/neg in first-occurrence order: a, b, c, d (rows 0..3).
cat > "$tmp/groups.jsonl" <<'J'
{"query": "q1", "pos": ["a"], "task": "t"}
{"query": "q2", "pos": ["b"], "neg": ["c"], "extra_field": [1, 2]}
{"query": "q3", "pos": ["d"], "neg": ["a"]}
{"query": "q4", "pos": ["d", "a"]}
J
write_emb "$tmp/pool.st" '[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]'
# q4 scores like q3, but with two positives its anchor is the best one (a, 0.875): kept where q3 is dropped.
write_emb "$tmp/q.st" '[[0.875,0.5,0.75,0.125],[0.25,0.75,0.375,0.625],[0.875,0.125,0.25,0.5],[0.875,0.125,0.25,0.5]]'
printf '%s\n' '{"id": "0", "text": "a"}' '{"id": "1", "text": "b"}' '{"id": "2", "text": "c"}' '{"id": "3", "text": "d"}' > "$tmp/corpus.jsonl"
pre=(--query-embeddings "$tmp/q.st" --corpus-embeddings "$tmp/pool.st")

expect_rc 0 "$exe" -q "${pre[@]}" --range 0-4 --negatives 2 --sampling top --scores --filter-topk 0 \
  --rejects "$tmp/rej.jsonl" -o "$tmp/out.jsonl" "$tmp/groups.jsonl" && {
  cat > "$tmp/want.jsonl" <<'J'
{"query":"q1","pos":["a"],"neg":["c","b"],"pos_scores":[0.875],"neg_scores":[0.75,0.5],"task":"t"}
{"query":"q2","pos":["b"],"neg":["c","d"],"pos_scores":[0.75],"neg_scores":[0.375,0.625],"extra_field":[1, 2]}
{"query":"q4","pos":["d","a"],"neg":["c","b"],"pos_scores":[0.5,0.875],"neg_scores":[0.25,0.125]}
J
  checks=$((checks + 1)); cmp -s "$tmp/out.jsonl" "$tmp/want.jsonl" || { echo "FAIL: mined output"; diff "$tmp/out.jsonl" "$tmp/want.jsonl"; failures=$((failures + 1)); }
  expect_grep '^\{"query": "q3", "pos": \["d"\], "neg": \["a"\],"_reject":\{"stage":"mine","reason":"ranking_consistency","positive_rank":2,"positive_score":0.5,"threshold_score":0.875\}\}$' "$tmp/rej.jsonl" "ranking reject"
  expect_grep '"seed": 42' "$tmp/out.jsonl.meta.json" "meta seed"
  expect_grep '"range": "0-4"' "$tmp/out.jsonl.meta.json" "meta window"
  expect_grep '"rejected": \{"ranking_consistency": 1\}' "$tmp/out.jsonl.meta.json" "meta counts"
}
# The bf16 and int8 first passes with f32 rescoring return the same lists, ties and scores included
# (int8 where the CPU has VNNI; elsewhere it is refused, with the reason).
precisions=(bf16 auto)
if grep -qwE 'avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo; then
  precisions+=(int8)
else
  expect_rc 2 "$exe" "${pre[@]}" --search-precision int8 -o "$tmp/o_int8.jsonl" "$tmp/groups.jsonl" &&
    expect_grep "int8 needs a CPU with VNNI" "$tmp/err"
fi
for precision in "${precisions[@]}"; do
  expect_rc 0 "$exe" -q "${pre[@]}" --range 0-4 --negatives 2 --sampling top --scores --filter-topk 0 \
    --search-precision "$precision" --rejects "$tmp/rej_$precision.jsonl" -o "$tmp/out_$precision.jsonl" "$tmp/groups.jsonl" && {
    checks=$((checks + 1))
    cmp -s "$tmp/out_$precision.jsonl" "$tmp/want.jsonl" && cmp -s "$tmp/rej_$precision.jsonl" "$tmp/rej.jsonl" ||
      { echo "FAIL: --search-precision $precision output differs from f32"; failures=$((failures + 1)); }
  }
done
expect_rc 2 "$exe" "${pre[@]}" --search-precision fp8 -o "$tmp/o_bad.jsonl" "$tmp/groups.jsonl" &&
  expect_grep "search-precision" "$tmp/err"
# Every library the search's float32 products can come from (KALM_SEARCH_BLAS; setup.sh installs BLIS and
# OpenBLAS) gives the same lists; an unknown one is refused before any output.
for blas in torch blis openblas; do
  expect_rc 0 env KALM_SEARCH_BLAS=$blas "$exe" -q "${pre[@]}" --range 0-4 --negatives 2 --sampling top --scores \
    --filter-topk 0 --rejects "$tmp/rej_$blas.jsonl" -o "$tmp/out_$blas.jsonl" "$tmp/groups.jsonl" && {
    checks=$((checks + 1))
    cmp -s "$tmp/out_$blas.jsonl" "$tmp/want.jsonl" && cmp -s "$tmp/rej_$blas.jsonl" "$tmp/rej.jsonl" ||
      { echo "FAIL: KALM_SEARCH_BLAS=$blas output differs"; failures=$((failures + 1)); }
  }
done
expect_rc 2 env KALM_SEARCH_BLAS=cublas "$exe" "${pre[@]}" --range 0-4 -o "$tmp/o_blas.jsonl" "$tmp/groups.jsonl" &&
  expect_grep '^kalm-mine-negatives: error: KALM_SEARCH_BLAS=cublas: expected auto, torch, blis or openblas' "$tmp/err"
expect_no_file "$tmp/o_blas.jsonl"
# k = 1: q3's positive (rank 2) ties the item at index 1: kept. Without --filter-topk nothing is dropped.
expect_rc 0 "$exe" -q "${pre[@]}" --range 0-4 --negatives 2 --sampling top --filter-topk 1 --rejects "$tmp/rej1.jsonl" -o "$tmp/o1.jsonl" "$tmp/groups.jsonl" && {
  checks=$((checks + 1)); [ "$(wc -l < "$tmp/o1.jsonl")" -eq 4 ] && [ ! -s "$tmp/rej1.jsonl" ] || { echo "FAIL: k=1 keeps all"; failures=$((failures + 1)); }
  # q3: a is an existing negative (kept), d the positive: mined from b, c -> c (0.25) first.
  expect_grep '^\{"query":"q3","pos":\["d"\],"neg":\["a","c"\]\}$' "$tmp/o1.jsonl" "q3 with kept negative"
}
# --existing replace and the eligible rank basis: q1's window 1-2 counts after excluding a -> b (rank 1 of c,b,d).
expect_rc 0 "$exe" -q "${pre[@]}" --range 1-2 --rank-basis eligible --negatives 1 --sampling top --existing replace \
  -o "$tmp/o2.jsonl" "$tmp/groups.jsonl" && expect_grep '^\{"query":"q1","pos":\["a"\],"neg":\["b"\],' "$tmp/o2.jsonl" "eligible basis"
# Retrieved basis, window 0-1 is q1's own positive: nothing eligible -> padded from the pool, marked.
expect_rc 0 "$exe" -q "${pre[@]}" --range 0-1 --negatives 1 --sampling top --existing replace \
  -o "$tmp/o3.jsonl" "$tmp/groups.jsonl" && expect_grep '^\{"query":"q1","pos":\["a"\],"neg":\["[bcd]"\],"task":"t","neg_padded":1\}$' "$tmp/o3.jsonl" "padding"
# ... and with --shortfall drop it goes to the rejects; kept + rejected = input.
expect_rc 0 "$exe" -q "${pre[@]}" --range 0-1 --negatives 1 --existing replace --shortfall drop \
  --rejects "$tmp/rej4.jsonl" -o "$tmp/o4.jsonl" "$tmp/groups.jsonl" && {
  expect_grep '"reason":"shortfall","eligible":0,"needed":1' "$tmp/rej4.jsonl" "shortfall reject"
  checks=$((checks + 1)); [ $(( $(wc -l < "$tmp/o4.jsonl") + $(wc -l < "$tmp/rej4.jsonl") )) -eq 4 ] || { echo "FAIL: kept+rejected != input"; failures=$((failures + 1)); }
}
# A drop with no --rejects is an error, and nothing is written.
expect_rc 1 "$exe" -q "${pre[@]}" --range 0-1 --negatives 1 --existing replace --shortfall drop -o "$tmp/o5.jsonl" "$tmp/groups.jsonl" && {
  expect_grep 'groups.jsonl:1: group dropped \(shortfall\)' "$tmp/err"
  expect_no_file "$tmp/o5.jsonl"
}

# Existing negatives: the first M are kept (nothing mined), one equal to a positive is removed.
printf '%s\n' '{"query": "q1", "pos": ["a"], "neg": ["d", "c", "b"]}' '{"query": "q1", "pos": ["a"], "neg": ["a ", "b"]}' > "$tmp/ex.jsonl"
write_emb "$tmp/qx.st" '[[0.875,0.5,0.75,0.125],[0.875,0.5,0.75,0.125]]'
expect_rc 0 "$exe" -q --query-embeddings "$tmp/qx.st" --corpus-embeddings "$tmp/pool.st" --corpus "$tmp/corpus.jsonl" \
  --range 0-4 --negatives 2 --sampling top -o "$tmp/ex.out" "$tmp/ex.jsonl" && {
  printf '%s\n' '{"query":"q1","pos":["a"],"neg":["d","c"]}' '{"query":"q1","pos":["a"],"neg":["b","c"]}' > "$tmp/ex.want"
  checks=$((checks + 1)); cmp -s "$tmp/ex.out" "$tmp/ex.want" || { echo "FAIL: existing negatives"; diff "$tmp/ex.out" "$tmp/ex.want"; failures=$((failures + 1)); }
}
# A positive outside --corpus cannot be scored from precomputed embeddings: the group is named.
printf '%s\n' '{"query": "q1", "pos": ["zzz"]}' > "$tmp/out-of-pool.jsonl"
write_emb "$tmp/q1.st" '[[0.875,0.5,0.75,0.125]]'
expect_rc 1 "$exe" --query-embeddings "$tmp/q1.st" --corpus-embeddings "$tmp/pool.st" --corpus "$tmp/corpus.jsonl" \
  --filter-topk 1 --rejects "$tmp/oop.rej" -o "$tmp/oop.out" "$tmp/out-of-pool.jsonl" && {
  expect_grep "out-of-pool.jsonl:1: text 'zzz' is not in the candidate pool" "$tmp/err"
  expect_no_file "$tmp/oop.out"
  expect_no_file "$tmp/oop.rej"
}

# Bad input: exit 1, file:line in the message, no output left behind.
printf '{"query": "q1", "pos": ["a"]}\n{"query": "q2", "pos": [}\n' > "$tmp/bad.jsonl"
expect_rc 1 "$exe" "${pre[@]}" -o "$tmp/bad-out.jsonl" "$tmp/bad.jsonl" && {
  expect_grep '^kalm-mine-negatives: error: .*bad.jsonl:2' "$tmp/err"
  expect_no_file "$tmp/bad-out.jsonl"
  expect_no_file "$tmp/bad-out.jsonl.meta.json"
}
printf '{"query": "q1"}\n' > "$tmp/nopos.jsonl"
expect_rc 1 "$exe" "${pre[@]}" -o "$tmp/bad-out.jsonl" "$tmp/nopos.jsonl" && expect_grep 'nopos.jsonl:1' "$tmp/err"
# Embedding rows that do not match the input.
write_emb "$tmp/q2.st" '[[1,0,0,0]]'
expect_rc 1 "$exe" --query-embeddings "$tmp/q2.st" --corpus-embeddings "$tmp/pool.st" -o "$tmp/bad-out.jsonl" "$tmp/groups.jsonl" && {
  expect_grep "q2.st: tensor 'embeddings' has 1 rows, expected 4" "$tmp/err"
  expect_no_file "$tmp/bad-out.jsonl"
}
# Usage errors: exit 2.
expect_rc 2 "$exe" "$tmp/groups.jsonl" && expect_grep 'give --model, or both' "$tmp/err"
expect_rc 2 "$exe" "${pre[@]}" --range 5-3 "$tmp/groups.jsonl" && expect_grep 'range wants A-B' "$tmp/err"
expect_rc 2 "$exe" "${pre[@]}" --sampling best "$tmp/groups.jsonl"
expect_rc 2 "$exe" "${pre[@]}" --task t "$tmp/groups.jsonl" && expect_grep 'apply only to --from-labels' "$tmp/err"
expect_rc 2 "$exe" --from-labels --filter-topk 3 "$tmp/groups.jsonl" && expect_grep 'do not apply to --from-labels' "$tmp/err"
expect_rc 2 "$exe" "${pre[@]}" --model "$tmp" "$tmp/groups.jsonl" && expect_grep 'exclusive' "$tmp/err"

# A tiny model with a tokenizer: the embedding path, deterministic by seed.
model="$tmp/model"
cp -r "$src/tests/fixtures/models/qwen2_causal" "$model"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer.json" "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer_config.json" "$model/"
cat > "$tmp/text.jsonl" <<'J'
{"query": "what is a cat", "pos": ["a cat is a small animal"], "neg": ["dogs bark"]}
{"query": "how to bake bread", "pos": ["mix flour and water, then bake"], "instruction": "Given a question, find the recipe"}
{"query": "capital of France", "pos": ["Paris is the capital of France"], "neg": ["Berlin is in Germany", "Rome is old"]}
{"query": "blue sky", "pos": ["the sky is blue because of scattering"]}
J
expect_rc 0 "$exe" -q --model "$model" --instruction "Retrieve passages" --range 0-10 --negatives 3 --scores \
  --rejects "$tmp/mrej.jsonl" -o "$tmp/m1.jsonl" "$tmp/text.jsonl" && {
  expect_rc 0 "$exe" -q --model "$model" --instruction "Retrieve passages" --range 0-10 --negatives 3 --scores \
    --rejects "$tmp/mrej2.jsonl" -o "$tmp/m2.jsonl" "$tmp/text.jsonl"
  checks=$((checks + 1)); cmp -s "$tmp/m1.jsonl" "$tmp/m2.jsonl" || { echo "FAIL: same seed, different output"; failures=$((failures + 1)); }
  expect_rc 0 $py - "$tmp/m1.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4, len(rows)
for r in rows:
    assert len(r["neg"]) == 3, r
    assert len(r["neg_scores"]) == 3 and len(r["pos_scores"]) == 1, r
    assert not set(r["neg"]) & set(r["pos"]), r
    assert r["query"] not in r["neg"], r
    assert len(set(r["neg"])) == 3, r
assert rows[2]["neg"][:2] == ["Berlin is in Germany", "Rome is old"], rows[2]   # existing kept first
assert rows[0]["neg"][0] == "dogs bark", rows[0]
PY
  expect_grep '"model": ".*model"' "$tmp/m1.jsonl.meta.json" "meta model"
}
# --corpus with a model: negatives come from the corpus; positives outside it are embedded for their scores.
printf '%s\n' '{"id": 1, "text": "cats are mammals"}' '{"id": 2, "text": "bread needs yeast"}' '{"id": 3, "text": "France is in Europe"}' \
  '{"id": 4, "text": "the ocean is blue"}' '{"id": 5, "text": "a cat is a small animal"}' > "$tmp/mcorpus.jsonl"
expect_rc 0 "$exe" -q --model "$model" --corpus "$tmp/mcorpus.jsonl" --range 0-5 --negatives 2 --existing replace --scores \
  -o "$tmp/mc.jsonl" "$tmp/text.jsonl" && expect_rc 0 $py - "$tmp/mc.jsonl" "$tmp/mcorpus.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
corpus = {json.loads(l)["text"] for l in open(sys.argv[2])}
assert len(rows) == 4
for r in rows:
    assert len(r["neg"]) == 2 and set(r["neg"]) <= corpus and not set(r["neg"]) & set(r["pos"]), r
    assert len(r["pos_scores"]) == 1 and -1.0001 <= r["pos_scores"][0] <= 1.0001, r
assert "a cat is a small animal" not in rows[0]["neg"]   # equals the positive
PY
# A pool text with no tokens is named by file:line.
printf '{"query": "x", "pos": ["y"], "neg": [""]}\n' > "$tmp/empty.jsonl"
expect_rc 1 "$exe" -q --model "$model" -o "$tmp/e.jsonl" "$tmp/empty.jsonl" && {
  expect_grep 'empty.jsonl:1: text has no tokens' "$tmp/err"
  expect_no_file "$tmp/e.jsonl"
}

# --from-labels: query = a text, pos = another text of its label, negatives from other labels.
cat > "$tmp/labels.jsonl" <<'J'
{"text": "great phone", "label": "pos"}
{"text": "awful battery", "label": "neg"}
{"text": "love the screen", "label": "pos"}
{"text": "broke in a day", "label": "neg"}
{"text": "it is a phone", "label": "neutral"}
{"text": "arrived on monday", "label": "neutral"}
{"text": "lonely text", "label": "other"}
J
for m in "" "--model $model"; do
  expect_rc 0 "$exe" -q --from-labels $m --negatives 2 --instruction "Classify the review" --task reviews \
    --rejects "$tmp/lrej.jsonl" -o "$tmp/l.jsonl" "$tmp/labels.jsonl" && {
    expect_grep '"reason":"no_positive"' "$tmp/lrej.jsonl" "singleton label rejected"
    expect_rc 0 $py - "$tmp/labels.jsonl" "$tmp/l.jsonl" "$tmp/lrej.jsonl" <<'PY'
import json, sys
items = [json.loads(l) for l in open(sys.argv[1])]
label = {i["text"]: i["label"] for i in items}
out = [json.loads(l) for l in open(sys.argv[2])]
rej = [json.loads(l) for l in open(sys.argv[3])]
assert len(out) + len(rej) == len(items), (len(out), len(rej))
assert len(out) == 6
for g in out:
    assert g["type"] == "classification" and g["task"] == "reviews" and g["instruction"] == "Classify the review", g
    assert label[g["pos"][0]] == label[g["query"]] and g["pos"][0] != g["query"], g
    assert len(g["neg"]) == 2 and all(label[n] != label[g["query"]] for n in g["neg"]), g
    assert g["label"] == label[g["query"]]
PY
  }
done
expect_rc 0 "$exe" -q --from-labels --label-type clustering --negatives 2 --rejects "$tmp/lrej.jsonl" -o "$tmp/l.jsonl" "$tmp/labels.jsonl" &&
  expect_grep '"type":"clustering"' "$tmp/l.jsonl"
printf '{"text": "no label here"}\n' > "$tmp/nolabel.jsonl"
expect_rc 1 "$exe" --from-labels -o "$tmp/l2.jsonl" "$tmp/nolabel.jsonl" && {
  expect_grep "nolabel.jsonl:1: missing field 'label'" "$tmp/err"
  expect_no_file "$tmp/l2.jsonl"
}
finish
