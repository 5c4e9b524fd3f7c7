# examples/wordnet/prepare.sh: the default experiment's data from the
# dictionaries Debian ships. Checks every output parses, the counts, that no
# held-out WordNet text reaches a training file (recomputed here from the
# WordNet files, independently of the awk), that two runs give the same bytes,
# that kalm-eval loads every task (tiny fixture model; BM25 printed), and that
# bad input fails cleanly. Skips (77) when the dictionaries are not installed.
wn=${WORDNET_DIR:-/usr/share/wordnet}
dictd=${DICTD_DIR:-/usr/share/dictd}
langs="fra spa deu ita nld por swe"
back="fra spa ita nld por swe"
for f in "$wn/data.noun" "$dictd/gcide.dict.dz" $(for l in $langs; do echo "$dictd/freedict-eng-$l.dict.dz"; done) \
    $(for l in $back; do echo "$dictd/freedict-$l-eng.dict.dz"; done); do
  if [ ! -r "$f" ]; then
    echo "SKIP: $f missing (apt install wordnet-base dict-gcide dict-freedict-eng-{$(echo $langs | tr ' ' ,)} dict-freedict-{$(echo $back | tr ' ' ,)}-eng)"
    exit 77
  fi
done
. "$(dirname "$0")/lib.sh"
src="$KALM_SOURCE_DIR"
prep="$src/examples/wordnet/prepare.sh"
PY=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}

expect_rc 0 "$prep" "$tmp/a" && {
  cat "$tmp/err"
  expect_grep "wn-lemma-def +[0-9]+" "$tmp/err" "summary"
  expect_grep "gcide-define +2000" "$tmp/err" "summary"
}
checks=$((checks + 1))
if ! "$PY" - "$tmp/a" "$wn" <<'PYEOF'
import json, os, re, subprocess, sys
out, wn = sys.argv[1], sys.argv[2]

def jsonl(path):
    data = subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout if path.endswith(".zst") \
        else open(path, "rb").read()
    rows = [json.loads(l) for l in data.decode("utf-8").splitlines()]
    assert rows, path
    return rows

# Training groups: schema, no duplicates, counts.
want = {"wn-lemma-def": ("retrieval", 90000, 120000), "wn-example-def": ("retrieval", 35000, 50000),
        "wn-related-def": ("retrieval", 70000, 100000), "wn-synonym": ("retrieval", 100000, 140000),
        "wn-lexname": ("classification", 90000, 115000), "gcide-wn-def": ("retrieval", 11000, 14500),
        # FreeDict: a group for each of an entry's first 3 translations, from
        # English-X and, reversed, X-English (all but German).
        "fd-eng-fra": ("bitext", 14000, 16000), "fd-eng-spa": ("bitext", 8300, 9600),
        "fd-eng-deu": ("bitext", 95000, 105000), "fd-eng-ita": ("bitext", 5800, 6700),
        "fd-eng-nld": ("bitext", 35000, 41000), "fd-eng-por": ("bitext", 25000, 28500),
        "fd-eng-swe": ("bitext", 8200, 9400)}
assert sorted(os.listdir(f"{out}/train")) == sorted(t + ".jsonl.zst" for t in want), os.listdir(f"{out}/train")
instructions = json.load(open(f"{out}/instructions.json"))
assert sorted(instructions) == sorted(want) and all(instructions.values()), instructions
train_texts = set()
train_queries = {}
for task, (type_, lo, hi) in want.items():
    rows = jsonl(f"{out}/train/{task}.jsonl.zst")
    print(f"  train {task}: {len(rows)} records")
    assert lo <= len(rows) <= hi, (task, len(rows))
    seen = set()
    for r in rows:
        assert r["task"] == task and r["type"] == type_, r
        assert isinstance(r["query"], str) and r["query"], r
        assert r["pos"] and all(isinstance(p, str) and p for p in r["pos"]), r
        assert set(r) <= {"query", "pos", "neg", "task", "type"}, r
        key = json.dumps(r, sort_keys=True)
        assert key not in seen, ("duplicate", r)
        seen.add(key)
        train_texts.add(r["query"]); train_texts.update(r["pos"]); train_texts.update(r.get("neg", []))
    train_queries[task] = {r["query"] for r in rows}
lex = jsonl(f"{out}/train/wn-lexname.jsonl.zst")
assert lex[0]["pos"] == ["noun top concept"] and len(lex[0]["neg"]) == 25, lex[0]
assert {len(r["neg"]) + 1 for r in lex} == {3, 15, 26}  # adjective, verb and noun classes

# The split, recomputed from WordNet: no held-out definition or example in training.
held = set()
nheld = 0
for pos in ("noun", "verb", "adj", "adv"):
    for line in open(f"{wn}/data.{pos}", encoding="latin-1"):
        if line.startswith("  ") or int(line.split()[0]) % 10 != 3:
            continue
        nheld += 1
        gloss = line.split(" | ", 1)[1].strip()
        d, _, rest = gloss.partition('; "')
        held.add(" ".join(d.split()).rstrip("; "))
        held.update(" ".join(e.split()) for e in re.findall(r'"([^"]*)"', '"' + rest if rest else ""))
held.discard("")
leaks = held & train_texts
assert not leaks, f"{len(leaks)} held-out texts in training, e.g. {sorted(leaks)[:3]}"
print(f"  {nheld} held-out synsets, {len(held)} held-out texts, none in {len(train_texts)} training texts")

# Evaluation tasks.
suite = [l.strip() for l in open(f"{out}/eval/suite.txt") if l.strip() and not l.startswith("#")]
assert suite == ["gcide-define", "gcide-wn-paraphrase", "wn-define", "wn-lexname-cls", "wn-lexname-clu", "wn-pair", "wn-rerank",
                 "wn-sts", "fd-bitext"], suite
for t in suite:
    assert json.load(open(f"{out}/eval/{t}/task.json"))["instruction"], t

def retrieval(t, qlo, qhi, clo, chi):
    corpus = {r["id"]: r["text"] for r in jsonl(f"{out}/eval/{t}/corpus.jsonl")}
    queries = {r["id"]: r["text"] for r in jsonl(f"{out}/eval/{t}/queries.jsonl")}
    lines = open(f"{out}/eval/{t}/qrels/test.tsv").read().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    qrels = [l.split("\t") for l in lines[1:]]
    print(f"  eval {t}: {len(queries)} queries, {len(corpus)} documents")
    assert qlo <= len(queries) <= qhi and clo <= len(corpus) <= chi, (t, len(queries), len(corpus))
    assert len(set(corpus.values())) == len(corpus), "duplicate documents"
    assert sorted(q for q, _, _ in qrels) == sorted(queries), "one relevant document per query"
    for q, d, s in qrels:
        assert d in corpus and s == "1", (q, d, s)
    return corpus, queries, qrels

corpus, queries, qrels = retrieval("gcide-define", 2000, 2000, 10000, 10000)
# gcide-wn-def trains on other GCIDE definitions: none that gcide-define scores.
assert not set(corpus.values()) & train_texts, "a gcide-define document in training"
for q, d, _ in qrels:
    hw, text = queries[q], corpus[d]
    assert len(text.split()) >= 3, text
    assert not re.search(r"[\[\]{}\\]|1913 Webster", text), text
    assert hw.lower() not in re.sub(r"[^a-z0-9']+", " ", " " + text.lower() + " ").split(" ") or " " in hw, (hw, text)
# Definition paraphrase: a GCIDE definition (never trained on) -> the WordNet
# definition of its headword's only sense, a held-out one, among every WordNet
# definition.
corpus, queries, qrels = retrieval("gcide-wn-paraphrase", 1500, 2000, 100000, 117659)
assert all(corpus[d] in held for _, d, _ in qrels)
assert not set(queries.values()) & train_texts
# Its training twin pairs GCIDE definitions with training synsets' definitions.
assert not {p for r in jsonl(f"{out}/train/gcide-wn-def.jsonl.zst") for p in r["pos"]} & held
corpus, queries, qrels = retrieval("wn-define", 2000, 3000, 7000, 8300)
assert set(corpus.values()) <= held

cls_train = jsonl(f"{out}/eval/wn-lexname-cls/train.jsonl")
cls_test = jsonl(f"{out}/eval/wn-lexname-cls/test.jsonl")
labels = {r["label"] for r in cls_train}
print(f"  eval wn-lexname-cls: {len(cls_train)} train, {len(cls_test)} test rows, {len(labels)} labels")
assert labels == {r["label"] for r in cls_test} and 35 <= len(labels) <= 41, labels
assert 1000 <= len(cls_train) <= 1400 and 2000 <= len(cls_test) <= 3000
assert {r["text"] for r in cls_train + cls_test} <= held
clu = jsonl(f"{out}/eval/wn-lexname-clu/test.jsonl")
print(f"  eval wn-lexname-clu: {len(clu)} texts, {len({r['label'] for r in clu})} labels")
assert 2000 <= len(clu) <= 3000 and all(r["label"].startswith("noun.") for r in clu)
assert {r["text"] for r in clu} <= held
pairs = jsonl(f"{out}/eval/wn-pair/test.jsonl")
ones = sum(r["label"] for r in pairs)
print(f"  eval wn-pair: {len(pairs)} pairs, {ones} positive")
assert 1500 <= len(pairs) <= 2000 and abs(2 * ones - len(pairs)) <= 2 and {r["label"] for r in pairs} == {0, 1}
assert {r["sentence2"] for r in pairs} <= held
rr = jsonl(f"{out}/eval/wn-rerank/test.jsonl")
print(f"  eval wn-rerank: {len(rr)} queries, {sum(len(r['negative']) for r in rr)} negatives")
assert 800 <= len(rr) <= 1500
for r in rr:
    assert len(r["positive"]) == 1 and 2 <= len(r["negative"]) <= 19 and r["positive"][0] not in r["negative"], r
    assert set(r["positive"] + r["negative"]) <= held
sts = jsonl(f"{out}/eval/wn-sts/test.jsonl")
scores = [r["score"] for r in sts]
print(f"  eval wn-sts: {len(sts)} pairs, scores {min(scores)}..{max(scores)}")
assert 1000 <= len(sts) <= 1500 and 0 < min(scores) < 1 and 4 < max(scores) < 5
assert all(sum(1 for s in scores if b <= s < b + 1) >= 150 for b in range(5)), "score range not covered"
assert {r["sentence1"] for r in sts} | {r["sentence2"] for r in sts} <= held
for lang in ("fra", "spa", "deu", "ita", "nld", "por", "swe"):
    bt = jsonl(f"{out}/eval/fd-bitext/eng-{lang}.jsonl")
    print(f"  eval fd-bitext eng-{lang}: {len(bt)} pairs")
    # eng-por: most headword lines carry a label after the pronunciation
    # (`Aaron /ɑːærən/ <s>`); those entries count too.
    lo, hi = {"deu": (4200, 4700), "por": (1300, 1600)}.get(lang, (400, 900))
    assert lo <= len(bt) <= hi, (lang, len(bt))
    assert len({r["sentence2"] for r in bt}) == len(bt)
    # Ding's grammar and domain labels (<masc>, [zool.]) are not part of a translation.
    assert not any(c in r["sentence2"] for r in bt for c in "<>{}"), lang
    assert not {r["sentence1"] for r in bt} & train_queries[f"fd-eng-{lang}"], "held-out headword in training"
    # The split rule, recomputed: no English side of a training pair (either
    # dictionary direction) is one the rule holds out, and no held-out pair
    # is trained.
    held_out = lambda w: sum(b * (i + 1) for i, b in enumerate(w.encode())) % 10 == 3
    assert not any(held_out(q) for q in train_queries[f"fd-eng-{lang}"]), lang
    pairs_trained = {(r["query"], p) for r in jsonl(f"{out}/train/fd-eng-{lang}.jsonl.zst") for p in r["pos"]}
    assert not {(r["sentence1"], r["sentence2"]) for r in bt} & pairs_trained, lang
    # A headword line with a label is never read as a translation (Ding's
    # German translations hold slashes of their own: "Zinsrisiko / Zinssatzrisiko").
    assert lang == "deu" or not any(re.search(r" /[^/]+/", p) for _, p in pairs_trained), lang
PYEOF
then echo "FAIL: prepared files"; failures=$((failures + 1)); fi

# Same bytes on a second run, which replaces the first run's outputs in place.
(cd "$tmp/a" && find . -type f | sort | xargs sha256sum) >"$tmp/a.sha"
expect_rc 0 "$prep" "$tmp/a"
(cd "$tmp/a" && find . -type f | sort | xargs sha256sum) >"$tmp/b.sha"
checks=$((checks + 1))
if ! cmp -s "$tmp/a.sha" "$tmp/b.sha" || [ "$(wc -l <"$tmp/a.sha")" -ne 46 ]; then
  echo "FAIL: two runs differ (or a file is missing or left over)"; diff "$tmp/a.sha" "$tmp/b.sha" | head -5
  failures=$((failures + 1))
fi
# mawk (Debian's default) and gawk give the same bytes: run the one that is
# not the default awk, where installed.
default_awk=$(readlink -f "$(command -v awk)")
for a in mawk gawk; do
  p=$(command -v $a) || { echo "note: $a not installed; its output not compared"; continue; }
  [ "$(readlink -f "$p")" = "$default_awk" ] && continue
  expect_rc 0 env AWK=$a "$prep" "$tmp/$a" && {
    checks=$((checks + 1))
    if ! diff -r "$tmp/a" "$tmp/$a" >/dev/null; then echo "FAIL: $a's output differs from awk's"; failures=$((failures + 1)); fi
  }
  rm -rf "$tmp/$a"
done

# kalm-eval loads every task (tiny random model: only BM25's numbers mean anything).
model="$tmp/model"
cp -r "$src/tests/fixtures/models/qwen2_bidir" "$model"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/"tokenizer*.json "$model/"
expect_rc 0 "$KALM_BIN/kalm-eval" -m "$model" --max-length 16 --threads 2 --suite "$tmp/a/eval/suite.txt" \
  --output-dir "$tmp/results" && {
  cat "$tmp/out"
  for t in gcide-define gcide-wn-paraphrase wn-define wn-lexname-cls wn-lexname-clu wn-pair wn-rerank wn-sts fd-bitext; do
    expect_grep "^$t " "$tmp/out" "table row $t"
  done
  checks=$((checks + 1))
  if ! "$PY" - "$tmp/results" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
assert sorted(os.listdir(d)) == sorted(t + ".json" for t in ("gcide-define", "gcide-wn-paraphrase", "wn-define", "wn-lexname-cls",
    "wn-lexname-clu", "wn-pair", "wn-rerank", "wn-sts", "fd-bitext")), os.listdir(d)
r = {f[:-5]: json.load(open(os.path.join(d, f))) for f in os.listdir(d)}
assert sorted(r["fd-bitext"]["scores"]) == sorted(["eng-fra", "eng-spa", "eng-deu", "eng-ita", "eng-nld", "eng-por", "eng-swe"])
bm25 = {t: r[t]["bm25"]["test"]["main_score"] for t in ("gcide-define", "wn-define", "wn-rerank")}
print("  BM25:", bm25)
# The headword never occurs in its GCIDE definition, so BM25 has little to go on.
assert 0 < bm25["gcide-define"] < 0.1 and 0.1 < bm25["wn-define"] < 0.4 and 0.2 < bm25["wn-rerank"] < 0.6, bm25
PYEOF
  then echo "FAIL: results JSON"; failures=$((failures + 1)); fi
}

# Escaping: a backslash, a tab and quotes in a gloss reach the JSON intact
# (WordNet itself has no backslash). A crafted four-synset WordNet, real GCIDE.
mkdir -p "$tmp/tinywn"
printf '00000100 05 n 02 back\\slash_cat 0 tab_cat(a) 0 001 @ 00000200 n 0000 | a cat with a back\\slash and "quoted"\tword; "an ex\\ample"  \n' >"$tmp/tinywn/data.noun"
printf '00000200 05 n 01 feline 0 000 | any cat-like animal  \n00000203 05 n 01 heldcat 0 001 @ 00000200 n 0000 | a held-out cat  \n' >>"$tmp/tinywn/data.noun"
printf '00000100 29 v 01 purr 0 000 01 + 02 00 | make a purring sound  \n' >"$tmp/tinywn/data.verb"
printf '00000100 00 a 01 catty 0 000 | like a cat; "a catty remark"  \n' >"$tmp/tinywn/data.adj"
printf '00000100 02 r 01 catwise 0 000 | in the manner of a cat  \n' >"$tmp/tinywn/data.adv"
expect_rc 0 env WORDNET_DIR="$tmp/tinywn" "$prep" "$tmp/tiny" && {
  checks=$((checks + 1))
  if ! "$PY" - "$tmp/tiny" <<'PYEOF'
import json, subprocess, sys
def rows(task):
    out = subprocess.run(["zstd", "-dc", f"{sys.argv[1]}/train/{task}.jsonl.zst"], check=True, capture_output=True).stdout
    return [json.loads(l) for l in out.decode().splitlines()]
d = 'a cat with a back\\slash and "quoted" word'
assert rows("wn-lemma-def") == [
    {"query": "back\\slash cat, tab cat", "pos": [d], "task": "wn-lemma-def", "type": "retrieval"},
    {"query": "feline", "pos": ["any cat-like animal"], "task": "wn-lemma-def", "type": "retrieval"},
    {"query": "purr", "pos": ["make a purring sound"], "task": "wn-lemma-def", "type": "retrieval"},
    {"query": "catty", "pos": ["like a cat"], "task": "wn-lemma-def", "type": "retrieval"},
    {"query": "catwise", "pos": ["in the manner of a cat"], "task": "wn-lemma-def", "type": "retrieval"}], rows("wn-lemma-def")
assert [(r["query"], r["pos"]) for r in rows("wn-example-def")] == [("an ex\\ample", [d]), ("a catty remark", ["like a cat"])]
assert [(r["query"], r["pos"]) for r in rows("wn-related-def")] == [(d, ["any cat-like animal"])]
assert [(r["query"], r["pos"]) for r in rows("wn-synonym")] == [("back\\slash cat", ["tab cat"]), ("tab cat", ["back\\slash cat"])]
lex = rows("wn-lexname")
assert [(r["query"], r["pos"], len(r["neg"])) for r in lex] == [
    (d, ["noun animal"], 25), ("any cat-like animal", ["noun animal"], 25), ("make a purring sound", ["verb body"], 14),
    ("like a cat", ["adjective"], 2)], lex
ev = f"{sys.argv[1]}/eval/wn-define"
assert [json.loads(l) for l in open(f"{ev}/corpus.jsonl")] == [{"id": "n203", "text": "a held-out cat"}]
assert [json.loads(l) for l in open(f"{ev}/queries.jsonl")] == [{"id": "q203", "text": "heldcat"}]
assert open(f"{ev}/qrels/test.tsv").read() == "query-id\tcorpus-id\tscore\nq203\tn203\t1\n"
PYEOF
  then echo "FAIL: escaping / crafted WordNet"; failures=$((failures + 1)); fi
}

# Bad input: usage, a missing dictionary, a malformed WordNet line; nothing left behind.
expect_rc 2 "$prep" && expect_grep "usage: prepare.sh OUT_DIR" "$tmp/err"
expect_rc 2 env FREEDICT_ALTS=0 "$prep" "$tmp/c" && expect_grep "FREEDICT_ALTS must be a positive integer" "$tmp/err"
expect_rc 1 env DICTD_DIR="$tmp/none" "$prep" "$tmp/c" && expect_grep "cannot read .*gcide.dict.dz" "$tmp/err"
mkdir -p "$tmp/badwn"
cp "$wn/data.verb" "$wn/data.adj" "$wn/data.adv" "$tmp/badwn/"
{ head -40 "$wn/data.noun"; echo "00009999 03 n 01 thing 0 000 no gloss bar here"; } >"$tmp/badwn/data.noun"
expect_rc 1 env WORDNET_DIR="$tmp/badwn" "$prep" "$tmp/c" && expect_grep "data.noun:41: not a synset line" "$tmp/err"
checks=$((checks + 1))
if [ -n "$(ls -A "$tmp/c" 2>/dev/null)" ]; then echo "FAIL: a failed run left files in $tmp/c"; ls -A "$tmp/c"; failures=$((failures + 1)); fi
finish
