# kalm-synth-filter end to end: every rule routes its record to the rejects
# with stage and reason; kept + rejected = input; kept records are unchanged;
# bad streams and flags fail cleanly; `prompts` builds persona prompts.
. "$(dirname "$0")/lib.sh"
exe="$KALM_BIN/kalm-synth-filter"
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}
src=${KALM_SOURCE_DIR:?}

{
  printf '%s\n' '{"query": "what is rust", "pos": ["a systems language"], "neg": ["a fungus"]}'
  printf '%s\n' 'not json at all'
  printf '%s\n' '{"query": "  ", "pos": ["x"]}'
  printf '%s\n' '{"query": "q", "pos": ["ok", " \t"]}'
  printf '%s\n' '{"query": "q2", "pos": ["p"], "neg": [""]}'
  printf '%s\n' '{"query": "same  text", "pos": ["same text"]}'
  printf '%s\n' '{"query": "q3", "pos": ["p3"], "neg": ["p3 "]}'
  printf '%s\n' '{"query": "what  is rust", "pos": ["a systems language"]}'
  printf '%s\n' '{"query": "no positive"}'
  printf '%s\n' '[1, 2]'
  printf '\n'
  printf '{"query": "bad \xff utf8", "pos": ["p"]}\n'
  printf '%s\n' '{"query": "kept two", "pos": ["another answer"], "extra": {"k": [1,2]}}'
} > "$tmp/in.jsonl"

expect_rc 0 "$exe" --rejects "$tmp/rej.jsonl" -o "$tmp/out.jsonl" "$tmp/in.jsonl" && {
  expect_grep '12 records: 2 kept, 10 rejected \(duplicate 1, empty_negative 1, empty_positive 1, empty_query 1, malformed 4, negative_equals_positive 1, query_equals_positive 1\)' "$tmp/err" "summary"
  printf '%s\n' '{"query": "what is rust", "pos": ["a systems language"], "neg": ["a fungus"]}' \
    '{"query": "kept two", "pos": ["another answer"], "extra": {"k": [1,2]}}' > "$tmp/want.jsonl"
  # kept + rejected = input records (the blank line is not a record).
  checks=$((checks + 1)); [ $(( $(wc -l < "$tmp/out.jsonl") + $(wc -l < "$tmp/rej.jsonl") )) -eq "$(grep -c . "$tmp/in.jsonl")" ] || { echo "FAIL: kept + rejected != input"; failures=$((failures + 1)); }
  checks=$((checks + 1)); cmp -s "$tmp/out.jsonl" "$tmp/want.jsonl" || { echo "FAIL: kept records changed"; diff "$tmp/out.jsonl" "$tmp/want.jsonl"; failures=$((failures + 1)); }
  expect_rc 0 $py - "$tmp/rej.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
got = [(r["_reject"]["stage"], r["_reject"]["reason"]) for r in rows]
want = [("parse", "malformed"), ("validity", "empty_query"), ("validity", "empty_positive"),
        ("validity", "empty_negative"), ("equality", "query_equals_positive"),
        ("equality", "negative_equals_positive"), ("dedup", "duplicate"), ("parse", "malformed"),
        ("parse", "malformed"), ("parse", "malformed")]
assert got == want, got
assert rows[0]["_raw"] == "not json at all", rows[0]
assert ":2" in rows[0]["_reject"]["detail"], rows[0]
assert rows[6]["_reject"]["detail"].endswith("in.jsonl:1"), rows[6]
assert rows[8]["_raw"] == "[1, 2]", rows[8]
assert "_raw_latin1" in rows[9] or "_raw" in rows[9], rows[9]
PY
}
expect_grep '"rejected": \{"duplicate": 1, "empty_negative": 1, "empty_positive": 1, "empty_query": 1, "malformed": 4, ' "$tmp/out.jsonl.meta.json" "meta counts"
expect_grep '"tool": "kalm-synth-filter"' "$tmp/out.jsonl.meta.json" "meta tool"
# --no-dedup keeps the duplicate.
expect_rc 0 "$exe" -q --no-dedup --rejects "$tmp/rej2.jsonl" -o "$tmp/out2.jsonl" "$tmp/in.jsonl" && {
  checks=$((checks + 1)); [ "$(wc -l < "$tmp/out2.jsonl")" -eq 3 ] && [ "$(wc -l < "$tmp/rej2.jsonl")" -eq 9 ] || { echo "FAIL: --no-dedup counts"; failures=$((failures + 1)); }
}
# Rejections without --rejects: an error, nothing written.
expect_rc 1 "$exe" -o "$tmp/out3.jsonl" "$tmp/in.jsonl" && {
  expect_grep 'no --rejects FILE' "$tmp/err"
  expect_no_file "$tmp/out3.jsonl"
}
# A broken zstd stream is the run's failure, not a record's.
printf '{"query": "a", "pos": ["b"]}\n' | zstd -q -c > "$tmp/z.jsonl.zst"
head -c 20 "$tmp/z.jsonl.zst" > "$tmp/trunc.zst"
expect_rc 1 "$exe" --rejects "$tmp/rej4.jsonl" -o "$tmp/out4.jsonl" "$tmp/trunc.zst" && {
  expect_grep '^kalm-synth-filter: error: ' "$tmp/err"
  expect_no_file "$tmp/out4.jsonl"
  expect_no_file "$tmp/rej4.jsonl"
}
expect_rc 0 "$exe" -q -o "$tmp/z.out" "$tmp/z.jsonl.zst" && expect_grep '"query": "a"' "$tmp/z.out"
# Model-only filters without --model: usage error.
expect_rc 2 "$exe" --max-tokens 5 "$tmp/in.jsonl" && expect_grep 'need --model' "$tmp/err"

# With a tiny model: token bounds, near duplicates, ranking consistency.
model="$tmp/model"
cp -r "$src/tests/fixtures/models/qwen2_causal" "$model"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer.json" "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer_config.json" "$model/"
{
  printf '%s\n' '{"query": "short", "pos": ["fine answer"]}'
  printf '%s\n' '{"query": "this query is far too long for the bound we set here", "pos": ["x y"]}'
  printf '%s\n' '{"query": "short", "pos": ["different answer"]}'
  printf '%s\n' '{"query": "other", "pos": ["a"]}'
} > "$tmp/m.jsonl"
expect_rc 0 "$exe" --model "$model" --max-tokens 30 --min-tokens 1 --near-dup-threshold 0.9999 \
  --rejects "$tmp/mrej.jsonl" -o "$tmp/mout.jsonl" "$tmp/m.jsonl" && {
  expect_grep '"reason":"too_long","detail":"query: [0-9]+ tokens > --max-tokens 30"' "$tmp/mrej.jsonl" "too_long"
  expect_grep '"reason":"near_duplicate","detail":"query close to .*m.jsonl:1","cosine":' "$tmp/mrej.jsonl" "near dup"
  checks=$((checks + 1)); [ "$(wc -l < "$tmp/mout.jsonl")" -eq 2 ] || { echo "FAIL: model filter kept"; failures=$((failures + 1)); }
}
# Ranking consistency with k = 0 keeps exactly the records whose positive is the top hit.
expect_rc 0 "$exe" -q --model "$model" --filter-topk 0 --rejects "$tmp/rrej.jsonl" -o "$tmp/rout.jsonl" "$tmp/m.jsonl" && {
  checks=$((checks + 1)); [ $(( $(wc -l < "$tmp/rout.jsonl") + $(wc -l < "$tmp/rrej.jsonl") )) -eq 4 ] || { echo "FAIL: ranking kept+rejected"; failures=$((failures + 1)); }
  if [ -s "$tmp/rrej.jsonl" ]; then expect_grep '"stage":"ranking","reason":"ranking_consistency","positive_rank":[2-9]' "$tmp/rrej.jsonl"; fi
}
# k larger than the pool: the filter never applies.
expect_rc 0 "$exe" -q --model "$model" --filter-topk 50 -o "$tmp/rout2.jsonl" "$tmp/m.jsonl" && {
  checks=$((checks + 1)); [ "$(wc -l < "$tmp/rout2.jsonl")" -eq 4 ] || { echo "FAIL: k > pool"; failures=$((failures + 1)); }
}

# prompts: personas x templates.
printf '%s\n' '{"persona": "A marine biologist who studies coral reefs"}' '{"persona": "A retired chess coach"}' > "$tmp/personas.jsonl"
expect_rc 0 "$exe" prompts -q --personas "$tmp/personas.jsonl" --templates "$src/examples/prompts" --language French -o "$tmp/prompts.jsonl" && {
  expect_rc 0 $py - "$tmp/prompts.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 12, len(rows)   # 2 personas x 6 task types
types = sorted({r["task_type"] for r in rows})
assert types == ["bitext", "retrieval_long_long", "retrieval_long_short", "retrieval_short_long", "retrieval_short_short", "sts"], types
for r in rows:
    assert r["messages"][0] == {"role": "system", "content": r["persona"]}, r
    if r["task_type"].startswith("retrieval"):
        assert r["step"] == "brainstorm"
        nxt = r["next"]["messages"]
        assert len(nxt) == 1 and nxt[0]["role"] == "user" and r["persona"] not in nxt[0]["content"]
        assert "{task}" in nxt[0]["content"] and "French" in nxt[0]["content"]
    else:
        assert r["step"] == "generate" and "next" not in r and "French" in r["messages"][1]["content"]
PY
}
expect_rc 0 "$exe" prompts -q --personas "$tmp/personas.jsonl" --templates "$src/examples/prompts" --task-types sts -o "$tmp/p2.jsonl" && {
  checks=$((checks + 1)); [ "$(wc -l < "$tmp/p2.jsonl")" -eq 2 ] || { echo "FAIL: --task-types"; failures=$((failures + 1)); }
}
expect_rc 2 "$exe" prompts --personas "$tmp/personas.jsonl" --templates "$src/examples/prompts" --task-types nope && expect_grep 'no template nope' "$tmp/err"
printf '%s\n' '{"persona": "ok"}' '{"name": "no persona"}' > "$tmp/badp.jsonl"
expect_rc 1 "$exe" prompts --personas "$tmp/badp.jsonl" --templates "$src/examples/prompts" -o "$tmp/p3.jsonl" && {
  expect_grep 'badp.jsonl:2: a persona needs' "$tmp/err"
  expect_no_file "$tmp/p3.jsonl"
}
# A line over the 256 MiB limit after a normal line: exit 1 naming file:line, no
# output, from a file, from stdin and from .zst (this once crashed: the reject
# path copied a view of a buffer the reader had freed while growing).
{ printf '%s\n' '{"query": "q", "pos": ["p"]}'; printf '{"query": "'; head -c 268435500 /dev/zero | tr '\0' q; printf '"}\n'; } > "$tmp/huge.jsonl"
zstd -q -1 "$tmp/huge.jsonl" -o "$tmp/huge.jsonl.zst"
for input in "$tmp/huge.jsonl" "$tmp/huge.jsonl.zst"; do
  expect_rc 1 "$exe" -q --rejects "$tmp/hrej.jsonl" -o "$tmp/hout.jsonl" "$input" && {
    expect_grep "huge.jsonl(.zst)?:2: line is longer than 268435456 bytes" "$tmp/err"
    expect_no_file "$tmp/hout.jsonl"; expect_no_file "$tmp/hrej.jsonl"
  }
done
expect_rc 1 sh -c '"$1" -q --rejects "$2/hrej.jsonl" -o "$2/hout.jsonl" < "$2/huge.jsonl"' sh "$exe" "$tmp" && {
  expect_grep "<stdin>:2: line is longer than 268435456 bytes" "$tmp/err"
  expect_no_file "$tmp/hout.jsonl"
}
rm -f "$tmp/huge.jsonl" "$tmp/huge.jsonl.zst"
# Kept records to a FIFO and rejects to /dev/stdout: written in place, no .meta.json
# beside them; the counts still add up.
mkfifo "$tmp/kept.fifo"
cat "$tmp/kept.fifo" > "$tmp/kept_from_fifo.jsonl" &
reader=$!
expect_rc 0 sh -c '"$1" -q --rejects /dev/stdout -o "$2/kept.fifo" "$2/in.jsonl" > "$2/rej_stdout.jsonl"' sh "$exe" "$tmp" && {
  wait "$reader"
  checks=$((checks + 1)); [ -p "$tmp/kept.fifo" ] && [ ! -e "$tmp/kept.fifo.meta.json" ] || { echo "FAIL: FIFO replaced or given a sidecar"; failures=$((failures + 1)); }
  checks=$((checks + 1)); cmp -s "$tmp/kept_from_fifo.jsonl" "$tmp/out.jsonl" && cmp -s "$tmp/rej_stdout.jsonl" "$tmp/rej.jsonl" || { echo "FAIL: FIFO/stdout outputs differ from the file outputs"; failures=$((failures + 1)); }
}
finish
