# Issue 5: transformers loads kalm-train's export. tests/fixtures/export/model was
# written by kalm-train; expected.safetensors holds what transformers (v4.47.1,
# eager f32) plus sentence-transformers' mean pooling and normalisation compute
# from it (tests/fixtures/export/gen_export_fixture.py). kalm-embed must agree.
. "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}
embed="$KALM_BIN/kalm-embed"
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}
fx="$src/tests/fixtures/export"
model="$fx/model"

# 1. The export has every file transformers and sentence-transformers read.
for f in config.json model.safetensors tokenizer.model tokenizer_config.json modules.json \
         1_Pooling/config.json config_sentence_transformers.json sentence_bert_config.json; do
  checks=$((checks + 1))
  [ -s "$model/$f" ] || { echo "FAIL: export lacks $f"; failures=$((failures + 1)); }
done

# 2. Token ids, and embeddings in both attention modes: transformers' Qwen2 ignores
#    use_bidirectional_attention and runs causal (what AutoModel users get);
#    kalm honours it by default (compared with transformers made bidirectional).
#    expected.safetensors holds AutoModel's output on untruncated ids, so these
#    runs lift the limit with --max-length 512; by default kalm-embed truncates
#    at the export's max_seq_length (24), as sentence-transformers does.
expect_rc 0 "$embed" -q -m "$model" --output-format tokens --max-length 512 "$fx/texts.jsonl" -o "$tmp/ids.jsonl"
expect_rc 0 "$embed" -q -m "$model" --output-format tokens "$fx/texts.jsonl" -o "$tmp/ids24.jsonl"
expect_rc 0 "$embed" -q -m "$model" --max-length 512 "$fx/texts.jsonl" -o "$tmp/bidir.jsonl"
expect_rc 0 "$embed" -q -m "$model" --max-length 512 --attention causal "$fx/texts.jsonl" -o "$tmp/causal.jsonl"
expect_rc 0 "$embed" -q -m "$model" --max-length 512 --attention bidirectional "$fx/texts.jsonl" -o "$tmp/bidir2.safetensors"
expect_rc 0 $py - "$tmp" "$fx/expected.safetensors" <<'PY'
import sys, json, struct, numpy as np
d, exp_path = sys.argv[1:3]
def read_st(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    meta = h.pop("__metadata__", {})
    kinds = {"F32": "<f4", "I64": "<i8"}
    out = {}
    for k, v in h.items():
        b, e = v["data_offsets"]
        assert 8 + n + e <= len(raw), (path, k)
        out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=kinds[v["dtype"]]).reshape(v["shape"])
    return out, meta
exp, meta = read_st(exp_path)
assert meta["pooling"] == "mean" and meta["normalized"] == "true", meta
ids, mask = exp["input_ids"], exp["attention_mask"]
rows = [json.loads(l)["ids"] for l in open(d + "/ids.jsonl")]
assert len(rows) == ids.shape[0] == 5, (len(rows), ids.shape)
rows24 = [json.loads(l)["ids"] for l in open(d + "/ids24.jsonl")]
for b, r in enumerate(rows):
    n = int(mask[b].sum())
    assert r == ids[b, :n].tolist(), (b, r, ids[b, :n].tolist())
    assert rows24[b] == ids[b, :min(n, 24)].tolist(), (b, rows24[b])  # sentence-transformers' truncation
assert max(int(m.sum()) for m in mask) > 24  # some text is truncated by default
def load_jsonl(p):
    return np.array([json.loads(l)["embedding"] for l in open(p)], dtype=np.float32)
causal, bidir = load_jsonl(d + "/causal.jsonl"), load_jsonl(d + "/bidir.jsonl")
bidir2 = read_st(d + "/bidir2.safetensors")[0]["embeddings"]
want_c, want_b = exp["embeddings_causal"], exp["embeddings_bidirectional"]
assert causal.shape == want_c.shape == (5, 32), causal.shape
dc, db = np.abs(causal - want_c).max(), np.abs(bidir - want_b).max()
print(f"max abs diff: causal {dc:.2e}, bidirectional {db:.2e}")
assert dc < 1e-5, dc
assert db < 1e-5, db
assert np.abs(bidir2 - bidir).max() == 0.0  # the export's default is bidirectional
assert np.abs(want_c - want_b).max() > 1e-3  # the two checks are not the same check
PY
[ -s "$tmp/out" ] && sed 's/^/  /' "$tmp/out"

# 3. --prompt retrieval prefixes exactly config_sentence_transformers.json's prompt
#    (row t4 of texts.jsonl is that prompt + "what does a horse do").
printf '{"id": "q", "text": "what does a horse do"}\n' > "$tmp/q.jsonl"
expect_rc 0 "$embed" -q -m "$model" --max-length 512 --prompt retrieval "$tmp/q.jsonl" -o "$tmp/q.jsonl.out.jsonl"
expect_rc 0 $py - "$tmp/q.jsonl.out.jsonl" "$tmp/bidir.jsonl" <<'PY'
import sys, json, numpy as np
q = np.array(json.loads(open(sys.argv[1]).readline())["embedding"], dtype=np.float32)
rows = [json.loads(l) for l in open(sys.argv[2])]
t4 = np.array([r["embedding"] for r in rows if r["id"] == "t4"][0], dtype=np.float32)
assert np.abs(q - t4).max() < 1e-6, np.abs(q - t4).max()
PY

finish
