# kalm-embed --quantize against sentence-transformers' quantize_embeddings (the
# PyPI oracle) on kalm-embed's own float32 output, --quantize-ranges, and
# kalm-eval/kalm-mine-negatives reading quantized files as sentence-transformers
# dequantizes them (int8/uint8) or as +1/-1 signs (binary: Hamming ranking).
. "$(dirname "$0")/lib.sh"
embed="$KALM_BIN/kalm-embed"
eval_exe="$KALM_BIN/kalm-eval"
src="$KALM_SOURCE_DIR"
task="$src/examples/eval/retrieval"
PY=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}

model="$tmp/model"
cp -r "$src/tests/fixtures/models/qwen2_bidir" "$model"
cp "$src/tests/fixtures/tokenizers/tiny_bytelevel/"tokenizer*.json "$model/"

expect_rc 0 "$embed" -q -m "$model" --max-length 64 "$task/corpus.jsonl" -o "$tmp/c.safetensors"
expect_rc 0 "$embed" -q -m "$model" --max-length 64 "$task/queries.jsonl" -o "$tmp/q.safetensors"
for precision in int8 uint8 binary ubinary; do
  expect_rc 0 "$embed" -q -m "$model" --max-length 64 --quantize "$precision" "$task/corpus.jsonl" -o "$tmp/c_$precision.safetensors"
  expect_rc 0 "$embed" -q -m "$model" --max-length 64 --quantize "$precision" "$task/corpus.jsonl" -o "$tmp/c_$precision.npy"
done
# Ranges from the queries, applied to the corpus (values outside them clip).
$PY - "$tmp/q.safetensors" "$tmp/q_ranges.npy" <<'PYEOF'
import sys, numpy as np
from safetensors.numpy import load_file
e = load_file(sys.argv[1])["embeddings"]
np.save(sys.argv[2], np.vstack((e.min(axis=0), e.max(axis=0))).astype(np.float32))
PYEOF
expect_rc 0 "$embed" -q -m "$model" --max-length 64 --quantize int8 --quantize-ranges "$tmp/q_ranges.npy" \
  "$task/corpus.jsonl" -o "$tmp/c_int8_qr.safetensors"
# A kalm-embed int8 output carries its ranges: the queries quantized with the corpus's.
expect_rc 0 "$embed" -q -m "$model" --max-length 64 --quantize int8 --quantize-ranges "$tmp/c_int8.safetensors" \
  "$task/queries.jsonl" -o "$tmp/q_int8_cr.npy"

checks=$((checks + 1))
if ! $PY - "$tmp" <<'PYEOF'
import sys, numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open
from sentence_transformers.util.quantization import quantize_embeddings
d = sys.argv[1]
emb = load_file(f"{d}/c.safetensors")["embeddings"]
q = load_file(f"{d}/q.safetensors")["embeddings"]
for p in ("int8", "uint8", "binary", "ubinary"):
    want = quantize_embeddings(emb, p)
    npy = np.load(f"{d}/c_{p}.npy")
    assert npy.dtype == want.dtype and npy.shape == want.shape, (p, npy.dtype, npy.shape, want.dtype, want.shape)
    assert np.array_equal(npy, want), (p, np.argwhere(npy != want)[:5])
    with safe_open(f"{d}/c_{p}.safetensors", "np") as f:
        st = f.get_tensor("embeddings")
        meta = f.metadata()
        assert meta["quantization"] == p and meta["dim"] == str(emb.shape[1]), meta
        assert np.array_equal(st, want), p
        if p.endswith("int8"):
            r = f.get_tensor("quantization_ranges")
            assert np.array_equal(r, np.vstack((emb.min(axis=0), emb.max(axis=0)))), p
        else:
            assert "quantization_ranges" not in f.keys(), p
ranges = np.load(f"{d}/q_ranges.npy")
got = load_file(f"{d}/c_int8_qr.safetensors")["embeddings"]
assert np.array_equal(got, quantize_embeddings(emb, "int8", ranges=ranges))
corpus_ranges = np.vstack((emb.min(axis=0), emb.max(axis=0)))
assert np.array_equal(np.load(f"{d}/q_int8_cr.npy"), quantize_embeddings(q, "int8", ranges=corpus_ranges))
print("quantized outputs equal sentence-transformers'")
PYEOF
then echo "FAIL: kalm-embed --quantize differs from sentence-transformers"; failures=$((failures + 1)); fi

# kalm-eval reads a quantized corpus as float32: int8 as sentence-transformers
# dequantizes it, binary as +/-1. Each must score exactly as the float file
# holding those values does.
$PY - "$tmp" <<'PYEOF'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
d = sys.argv[1]
f = load_file(f"{d}/c_int8.safetensors")
r = f["quantization_ranges"].astype(np.float32)
steps = (r[1] - r[0]) / np.float32(255)
steps = np.where(steps == 0, np.float32(1), steps)
deq = (f["embeddings"].astype(np.float64) + 128) * steps + r[0]  # sentence-transformers' _dequantize_embeddings
save_file({"embeddings": deq.astype(np.float32)}, f"{d}/c_int8_deq.safetensors")
dim = load_file(f"{d}/c.safetensors")["embeddings"].shape[1]
bits = np.unpackbits(load_file(f"{d}/c_ubinary.safetensors")["embeddings"], axis=-1)[:, :dim]
save_file({"embeddings": (bits.astype(np.float32) * 2 - 1)}, f"{d}/c_signs.safetensors")
qbits = np.unpackbits((load_file(f"{d}/q.safetensors")["embeddings"] > 0).astype(np.uint8), axis=-1)
q = load_file(f"{d}/q.safetensors")["embeddings"]
packed = np.packbits(q > 0, axis=-1)
save_file({"embeddings": packed}, f"{d}/q_ubinary.safetensors", metadata={"quantization": "ubinary", "dim": str(dim)})
save_file({"embeddings": ((q > 0).astype(np.float32) * 2 - 1)}, f"{d}/q_signs.safetensors")
PYEOF
score() {  # score NAME QUERIES CORPUS
  expect_rc 0 "$eval_exe" -q --no-bm25 --query-embeddings "$2" --corpus-embeddings "$3" --output-dir "$tmp/$1" "$task"
}
score f32 "$tmp/q.safetensors" "$tmp/c.safetensors"
score int8 "$tmp/q.safetensors" "$tmp/c_int8.safetensors"
score int8_deq "$tmp/q.safetensors" "$tmp/c_int8_deq.safetensors"
score hamming "$tmp/q_ubinary.safetensors" "$tmp/c_binary.safetensors"
score signs "$tmp/q_signs.safetensors" "$tmp/c_signs.safetensors"
checks=$((checks + 1))
if ! $PY - "$tmp" <<'PYEOF'
import json, sys
d = sys.argv[1]
s = {n: json.load(open(f"{d}/{n}/LicenseRetrieval.json"))["scores"]["test"][0] for n in ("f32", "int8", "int8_deq", "hamming", "signs")}
for a, b in (("int8", "int8_deq"), ("hamming", "signs")):
    for k in ("ndcg_at_10", "map_at_100", "recall_at_10", "mrr_at_10"):
        assert abs(s[a][k] - s[b][k]) < 1e-9, (a, b, k, s[a][k], s[b][k])
print({n: round(v["ndcg_at_10"], 4) for n, v in s.items()})
PYEOF
then echo "FAIL: quantized embeddings score differently from their float32 reading"; failures=$((failures + 1)); fi

# Bad input.
expect_rc 2 "$embed" -m "$model" --quantize int8 "$task/corpus.jsonl" -o "$tmp/x.jsonl" &&
  expect_grep "needs a safetensors or npy output" "$tmp/err"
expect_rc 2 "$embed" -m "$model" --quantize binary --quantize-ranges "$tmp/q_ranges.npy" "$task/corpus.jsonl" -o "$tmp/x.npy" &&
  expect_grep "goes with --quantize int8 or uint8" "$tmp/err"
expect_rc 2 "$embed" -m "$model" --quantize int4 "$task/corpus.jsonl" -o "$tmp/x.npy"
expect_rc 1 "$embed" -m "$model" --quantize int8 --quantize-ranges "$tmp/c.safetensors" "$task/corpus.jsonl" -o "$tmp/x.npy" &&
  expect_grep "c.safetensors: no tensor named 'quantization_ranges'" "$tmp/err"
expect_no_file "$tmp/x.npy"
$PY -c 'import numpy as np, sys; np.save(sys.argv[1], np.zeros((3, 4), np.float32))' "$tmp/bad_ranges.npy"
expect_rc 1 "$embed" -m "$model" --quantize uint8 --quantize-ranges "$tmp/bad_ranges.npy" "$task/corpus.jsonl" -o "$tmp/x.npy" &&
  expect_grep "bad_ranges.npy: quantization ranges have shape \[3, 4\], expected \[2, " "$tmp/err"
head -1 "$task/corpus.jsonl" > "$tmp/one.jsonl"
expect_rc 2 "$embed" -m "$model" --quantize int8 "$tmp/one.jsonl" -o "$tmp/x.npy" &&
  expect_grep "cannot be computed from 1 embedding" "$tmp/err"
# An int8 file without its metadata is not guessed at.
$PY - "$tmp" <<'PYEOF'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
d = sys.argv[1]
save_file({"embeddings": load_file(f"{d}/c_int8.safetensors")["embeddings"]}, f"{d}/c_int8_bare.safetensors")
f = load_file(f"{d}/c_binary.safetensors")
save_file(f, f"{d}/c_binary_nodim.safetensors", metadata={"quantization": "binary"})
save_file(f, f"{d}/c_binary_odd.safetensors", metadata={"quantization": "int4"})
PYEOF
expect_rc 1 "$eval_exe" --query-embeddings "$tmp/q.safetensors" --corpus-embeddings "$tmp/c_int8_bare.safetensors" "$task" &&
  expect_grep "c_int8_bare.safetensors: tensor 'embeddings' is I8 but the file has no 'quantization' metadata" "$tmp/err"
expect_rc 1 "$eval_exe" --query-embeddings "$tmp/q.safetensors" --corpus-embeddings "$tmp/c_binary_nodim.safetensors" "$task" &&
  expect_grep "c_binary_nodim.safetensors: metadata 'dim'" "$tmp/err"
expect_rc 1 "$eval_exe" --query-embeddings "$tmp/q.safetensors" --corpus-embeddings "$tmp/c_binary_odd.safetensors" "$task" &&
  expect_grep "c_binary_odd.safetensors: metadata 'quantization' int4" "$tmp/err"
finish
