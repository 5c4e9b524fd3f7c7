# kalm-embed end to end on a tiny random Qwen2 checkpoint (tests/fixtures/models)
# with a tiny byte-level BPE tokenizer (tests/fixtures/tokenizers/tiny_bytelevel).
. "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}
embed="$KALM_BIN/kalm-embed"
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}

model="$tmp/model"
mkdir -p "$model"
cp -r "$src/tests/fixtures/models/qwen2_causal/." "$model/"
rm -f "$model/expected.safetensors"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer.json" "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer_config.json" "$model/"

cat > "$tmp/corpus.jsonl" <<'JSON'
{"id": "d1", "text": "The quick brown fox jumps over the lazy dog."}
{"id": "d2", "text": "a"}
{"id": 3, "text": "Pack my box with five dozen liquor jugs, then pack another box with twelve more."}
{"id": "d4", "text": "hello world"}
JSON

# 1. safetensors (default) and npy outputs agree; rows are unit vectors.
expect_rc 0 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/e.safetensors"
expect_rc 0 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/e.npy"
expect_rc 0 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/e.jsonl"
expect_rc 0 $py - "$tmp" <<'PY'
import sys, json, struct, numpy as np
d = sys.argv[1]
raw = open(d + "/e.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
info = header["embeddings"]
assert info["dtype"] == "F32" and info["shape"] == [4, 64], info
b, e = info["data_offsets"]
st = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4").reshape(4, 64)
meta = header["__metadata__"]
assert meta["dim"] == "64" and meta["normalized"] == "true" and meta["pooling"] == "mean", meta
assert meta["tool"] == "kalm-embed", meta
npy = np.load(d + "/e.npy")
assert npy.shape == (4, 64) and (npy == st).all()
rows = [json.loads(l) for l in open(d + "/e.jsonl")]
assert [r["id"] for r in rows] == ["d1", "d2", "3", "d4"], rows
js = np.array([r["embedding"] for r in rows], dtype=np.float32)
assert np.abs(js - npy).max() == 0.0
assert np.allclose(np.linalg.norm(npy, axis=1), 1.0, atol=1e-5)
PY

# 2. Batching does not change results: one text per batch vs everything in one.
expect_rc 0 "$embed" -q -m "$model" --batch-tokens 1 "$tmp/corpus.jsonl" -o "$tmp/small.npy"
expect_rc 0 $py -c "
import numpy as np, sys
a = np.load('$tmp/e.npy'); b = np.load('$tmp/small.npy')
assert np.abs(a - b).max() <= 1e-5, np.abs(a - b).max()"
# --batch-tokens 0 is the device's default (1024 on a CPU): the same bytes as no flag and as 1024.
expect_rc 0 "$embed" -q -m "$model" --batch-tokens 0 "$tmp/corpus.jsonl" -o "$tmp/b0.npy"
expect_rc 0 "$embed" -q -m "$model" --batch-tokens 1024 "$tmp/corpus.jsonl" -o "$tmp/b1024.npy"
expect_rc 0 cmp "$tmp/e.npy" "$tmp/b0.npy"
expect_rc 0 cmp "$tmp/e.npy" "$tmp/b1024.npy"

# 2b. --overlap (the next chunk read and tokenised, the last one's JSON Lines written, on other
# threads beside the model; auto = on a GPU): the same bytes with it on and off over several
# chunks, streamed and matrix outputs, a count of truncated records that adds up across chunks;
# an input error in a later chunk ends the run with the error and no output, as without it, and
# so does a write error on the writing thread.
for f in npy jsonl; do
  expect_rc 0 "$embed" -m "$model" --chunk-records 1 --overlap off --max-length 6 "$tmp/corpus.jsonl" -o "$tmp/ov_off.$f"
  cp "$tmp/err" "$tmp/ov_off.err"
  expect_rc 0 "$embed" -m "$model" --chunk-records 1 --overlap on --max-length 6 "$tmp/corpus.jsonl" -o "$tmp/ov_on.$f"
  expect_grep "4 texts, [0-9]* tokens .2 truncated." "$tmp/err"
  expect_grep "4 texts, [0-9]* tokens .2 truncated." "$tmp/ov_off.err"
  expect_rc 0 cmp "$tmp/ov_off.$f" "$tmp/ov_on.$f"
done
{ head -n 3 "$tmp/corpus.jsonl"; echo '{"id": "bad", "text": 7}'; } > "$tmp/late_bad.jsonl"
for p in on off; do
  for f in npy jsonl; do
    expect_rc 1 "$embed" -q -m "$model" --chunk-records 2 --overlap $p "$tmp/late_bad.jsonl" -o "$tmp/late_out.$f"
    expect_grep "late_bad.jsonl:4" "$tmp/err"
    expect_no_file "$tmp/late_out.$f"
  done
  expect_rc 1 "$embed" -q -m "$model" --chunk-records 1 --overlap $p "$tmp/corpus.jsonl" -o /dev/full --output-format jsonl
  expect_grep "/dev/full: write failed: No space left on device" "$tmp/err"
done
expect_rc 2 "$embed" -q -m "$model" --overlap sometimes "$tmp/corpus.jsonl" -o "$tmp/x.npy"

# 3. Matryoshka --dim: 16 columns, renormalised; equals the normalised prefix of --no-normalize.
expect_rc 0 "$embed" -q -m "$model" --dim 16 "$tmp/corpus.jsonl" -o "$tmp/d16.npy"
expect_rc 0 "$embed" -q -m "$model" --no-normalize "$tmp/corpus.jsonl" -o "$tmp/raw.npy"
expect_rc 0 $py -c "
import numpy as np
a = np.load('$tmp/d16.npy'); r = np.load('$tmp/raw.npy')[:, :16]
assert a.shape == (4, 16)
assert np.abs(a - r / np.linalg.norm(r, axis=1, keepdims=True)).max() <= 1e-6"
expect_rc 2 "$embed" -q -m "$model" --dim 65 "$tmp/corpus.jsonl" -o "$tmp/bad.npy"
expect_no_file "$tmp/bad.npy"

# 4. Plain text input, stdin, instruction and prompt prefixes.
printf 'hello world\n' | "$embed" -q -m "$model" --input-format text -o "$tmp/t.npy"
checks=$((checks + 1)); [ $? -eq 0 ] || { echo "FAIL: text from stdin"; failures=$((failures + 1)); }
expect_rc 0 $py -c "
import numpy as np
a = np.load('$tmp/t.npy'); b = np.load('$tmp/e.npy')
assert np.abs(a[0] - b[3]).max() <= 1e-6"
expect_rc 0 "$embed" -q -m "$model" --prompt query "$tmp/corpus.jsonl" -o "$tmp/q.npy"
expect_rc 0 "$embed" -q -m "$model" --instruction "Given a query, retrieve documents that answer the query" "$tmp/corpus.jsonl" -o "$tmp/q2.npy"
expect_rc 0 $py -c "
import numpy as np
a = np.load('$tmp/q.npy'); b = np.load('$tmp/q2.npy'); c = np.load('$tmp/e.npy')
assert np.abs(a - b).max() == 0.0          # same prefix text either way
assert np.abs(a - c).max() > 1e-3          # and it changes the embedding"
expect_rc 2 "$embed" -q -m "$model" --prompt nosuch "$tmp/corpus.jsonl" -o "$tmp/x.npy"
expect_grep "no such prompt" "$tmp/err"

# 5. Token ids mode, and pre-tokenised input gives the same embeddings.
expect_rc 0 "$embed" -q -m "$model" --output-format tokens "$tmp/corpus.jsonl" -o "$tmp/tok.jsonl"
expect_grep '^\{"id":"d4","ids":\[[0-9,]+\]\}$' "$tmp/tok.jsonl" "tokens output"
expect_rc 0 $py -c "
import json
rows = [json.loads(l) for l in open('$tmp/tok.jsonl')]
with open('$tmp/ids.jsonl', 'w') as f:
    for r in rows: f.write(json.dumps({'id': r['id'], 'input_ids': r['ids']}) + '\n')"
rm -f "$model/tokenizer.json" "$model/tokenizer_config.json"
expect_rc 0 "$embed" -q -m "$model" "$tmp/ids.jsonl" -o "$tmp/ids.npy"
expect_rc 0 $py -c "
import numpy as np
assert np.abs(np.load('$tmp/ids.npy') - np.load('$tmp/e.npy')).max() <= 1e-6"
# ... but text needs a tokenizer
expect_rc 1 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/x.npy"
expect_grep "has no tokenizer" "$tmp/err"
expect_no_file "$tmp/x.npy"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer.json" "$src/tests/fixtures/tokenizers/tiny_bytelevel/tokenizer_config.json" "$model/"

# 6. Shards 1/2 + 2/2 = the whole corpus, in order.
expect_rc 0 "$embed" -q -m "$model" --shard 1/2 "$tmp/corpus.jsonl" -o "$tmp/s1.npy"
expect_rc 0 "$embed" -q -m "$model" --shard 2/2 "$tmp/corpus.jsonl" -o "$tmp/s2.npy"
expect_rc 0 $py -c "
import numpy as np
s = np.concatenate([np.load('$tmp/s1.npy'), np.load('$tmp/s2.npy')])
assert s.shape == (4, 64) and np.abs(s - np.load('$tmp/e.npy')).max() <= 1e-6"
expect_rc 2 "$embed" -q -m "$model" --shard 3/2 "$tmp/corpus.jsonl" -o "$tmp/x.npy"
# --dtype tf32 on CPU: refused, not run as f32.
expect_rc 2 "$embed" -q -m "$model" --dtype tf32 "$tmp/corpus.jsonl" -o "$tmp/tf32.npy"
expect_grep "--dtype tf32 is a GPU mode \(TF32 tensor cores\); on cpu use f32" "$tmp/err"
expect_no_file "$tmp/tf32.npy"

# 7. Truncation: counted by default, an error with --no-truncate (no output left).
expect_rc 0 "$embed" -m "$model" --max-length 4 "$tmp/corpus.jsonl" -o "$tmp/tr.npy"
expect_grep "\(2 truncated\)" "$tmp/err" "summary line"
expect_rc 1 "$embed" -q -m "$model" --max-length 4 --no-truncate "$tmp/corpus.jsonl" -o "$tmp/x.npy"
expect_grep "corpus.jsonl:1: .*--max-length" "$tmp/err"
expect_no_file "$tmp/x.npy"

# 8. Bad input and bad model directories: exit 1, a message naming the place.
printf '{"id": "a", "text": "fine"}\n{"id": "b", "text": 42}\n' > "$tmp/bad.jsonl"
expect_rc 1 "$embed" -q -m "$model" "$tmp/bad.jsonl" -o "$tmp/x.npy"
expect_grep "bad.jsonl:2" "$tmp/err"
expect_no_file "$tmp/x.npy"
expect_rc 1 "$embed" -q -m "$tmp/no-such-model" "$tmp/corpus.jsonl" -o "$tmp/x.npy"
expect_grep "no-such-model" "$tmp/err"
mkdir -p "$tmp/broken" && cp "$model/config.json" "$tmp/broken/"
expect_rc 1 "$embed" -q -m "$tmp/broken" "$tmp/corpus.jsonl" -o "$tmp/x.npy"
expect_grep "broken" "$tmp/err"
expect_rc 2 "$embed" -q "$tmp/corpus.jsonl" -o "$tmp/x.npy"
expect_grep "model is required" "$tmp/err"

# 9. Empty input: zero rows, not an error.
: > "$tmp/empty.jsonl"
expect_rc 0 "$embed" -q -m "$model" "$tmp/empty.jsonl" -o "$tmp/empty.jsonl.out.jsonl"
checks=$((checks + 1)); [ ! -s "$tmp/empty.jsonl.out.jsonl" ] || { echo "FAIL: empty output not empty"; failures=$((failures + 1)); }

# 10. Outputs that are not regular files are written in place, never replaced.
expect_rc 1 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o /dev/full --output-format npy
expect_grep "/dev/full: write failed: No space left on device" "$tmp/err"
checks=$((checks + 1)); [ -c /dev/full ] || { echo "FAIL: /dev/full is no longer a device"; failures=$((failures + 1)); }
mkfifo "$tmp/fifo.npy"
cat "$tmp/fifo.npy" > "$tmp/from_fifo.npy" &
reader=$!
expect_rc 0 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/fifo.npy"
wait "$reader"
checks=$((checks + 1)); [ -p "$tmp/fifo.npy" ] || { echo "FAIL: the FIFO was replaced"; failures=$((failures + 1)); }
checks=$((checks + 1)); cmp -s "$tmp/from_fifo.npy" "$tmp/e.npy" || { echo "FAIL: FIFO output differs from the file output"; failures=$((failures + 1)); }
expect_rc 0 sh -c '"$1" -q -m "$2" "$3" -o /dev/stdout --output-format npy | cat > "$4"' sh "$embed" "$model" "$tmp/corpus.jsonl" "$tmp/via_stdout.npy"
checks=$((checks + 1)); cmp -s "$tmp/via_stdout.npy" "$tmp/e.npy" || { echo "FAIL: -o /dev/stdout output differs"; failures=$((failures + 1)); }
# A link is followed: the file it names gets the output, the link stays.
ln -s e.npy "$tmp/link.npy"
expect_rc 0 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/link.npy"
checks=$((checks + 1)); [ -L "$tmp/link.npy" ] && cmp -s "$tmp/link.npy" "$tmp/from_fifo.npy" || { echo "FAIL: symlink output"; failures=$((failures + 1)); }
expect_rc 1 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp"
expect_grep "it is a directory" "$tmp/err"

# --profile: a Chrome trace of model batches 2-3 (one-row batches: --batch-tokens
# 1 puts each text in a batch of its own), the embeddings unchanged.
expect_rc 0 "$embed" -m "$model" "$tmp/corpus.jsonl" -o "$tmp/prof.npy" --batch-tokens 1 \
  --profile "$tmp/trace.json" --profile-batches 2:3
expect_grep "profile of 2 batch\(es\) from batch 2 in $tmp/trace.json" "$tmp/err"
expect_rc 0 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/noprof.npy" --batch-tokens 1
checks=$((checks + 1)); cmp -s "$tmp/prof.npy" "$tmp/noprof.npy" || { echo "FAIL: --profile changed the embeddings"; failures=$((failures + 1)); }
expect_rc 0 $py - "$tmp/trace.json" <<'PY'
import sys, json
events = json.load(open(sys.argv[1]))["traceEvents"]
steps = sorted({e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")})
assert steps == ["ProfilerStep#2", "ProfilerStep#3"], steps
names = {e.get("name") for e in events}
assert any(n and n.startswith("aten::") for n in names), sorted(n for n in names if n)[:20]
PY
# A window after the run's last batch: the embeddings are written, the summary says why no trace is.
expect_rc 0 "$embed" -m "$model" "$tmp/corpus.jsonl" -o "$tmp/late.npy" --profile "$tmp/late.json" --profile-batches 50
expect_grep "no profile: the run had [0-9]+ batch\(es\), fewer than 50" "$tmp/err"
expect_rc 0 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/late.npy" --profile "$tmp/late.json" --profile-batches 50
expect_grep "^kalm-embed: no profile: the run had [0-9]+ batch\(es\), fewer than 50" "$tmp/err" "stderr under -q"
expect_no_file "$tmp/late.json"
checks=$((checks + 1)); [ -f "$tmp/late.npy" ] || { echo "FAIL: no embeddings beside a late profile window"; failures=$((failures + 1)); }
expect_rc 2 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/x.npy" --profile-batches 2
expect_grep "--profile-batches needs --profile FILE" "$tmp/err"
expect_rc 2 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/x.npy" --profile "$tmp/t.json" --profile-batches 0:2
expect_rc 2 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/x.jsonl" --output-format tokens --profile "$tmp/t.json"
expect_rc 1 "$embed" -q -m "$model" "$tmp/corpus.jsonl" -o "$tmp/x.npy" --profile "$tmp/no-such-dir/t.json"
expect_no_file "$tmp/x.npy"
finish
