# Issue 12 (5): what kalm-train exports, sentence-transformers 6 / transformers 5
# run as kalm does. Four small models are trained from scratch with a tokenizer
# trained alongside (causal and bidirectional, Qwen2 and Gemma3, last-token and
# mean pooling; byte-level BPE, the default, and a SentencePiece unigram) and
# exported; SentenceTransformer(export).encode() must give kalm-embed's token
# ids and embeddings (within 1e-5), with and without the export's prompts.
# transformers 5 reads a bare tokenizer.model under tokenizer_class
# LlamaTokenizer with other pieces, so a unigram export carries a tokenizer.json
# (and says PreTrainedTokenizerFast); a check below shows the difference is real.
. "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}
train="$KALM_BIN/kalm-train"
embed="$KALM_BIN/kalm-embed"
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}
fx="$src/tests/fixtures"

# Texts that exercise the tokenizer: runs of spaces, a newline and a tab (not in
# the pieces: unk), the special tokens' strings, U+2581 itself, characters the
# training data never had, an empty text, and a text longer than max_seq_length.
"$py" - "$tmp/texts.jsonl" <<'PY'
import json, sys
texts = ["what does the cat do", "the dog runs in the park", "  two  spaces ", "line\nbreak\tand tab",
         "<s> a bird </s> sings <unk>", "\u2581the\u2581fish", "Ünïcödé ßtraße 東京 ok",
         " ".join(["a horse eats green grass"] * 30)]
with open(sys.argv[1], "w") as f:
    for i, t in enumerate(texts):
        f.write(json.dumps({"id": f"t{i}", "text": t}, ensure_ascii=False) + "\n")
PY

gemma_config="$fx/models_v5/gemma3_causal_last_left/config.json"
# The fifth field: true, or false for a model trained with --include-prompt
# false (its queries pool without their instruction; sentence-transformers must
# then leave the prompt out of the mean as kalm-embed does).
for spec in qwen2:causal:last:bpe:true qwen2:bidirectional:mean:bpe:true gemma3:causal:last:bpe:true \
            gemma3:bidirectional:mean:unigram:true qwen2:bidirectional:mean:bpe:false; do
  IFS=: read -r arch attention pooling kind include_prompt <<<"$spec"
  name="${arch}_${attention}_${pooling}_${kind}"
  qlen=24
  # The instruction alone is ~30 tokens of a 300-piece vocabulary: the query needs room after it.
  [ "$include_prompt" = false ] && name="${name}_noprompt" && qlen=64
  vocab=300
  [ "$kind" = unigram ] && vocab=64
  config="$fx/train/tiny_qwen2.json"
  [ "$arch" = gemma3 ] && config="$gemma_config"
  expect_rc 0 "$train" "$fx/train/toy" --init-config "$config" --train-tokenizer "$vocab" \
    --tokenizer-model "$kind" --instructions "$fx/train/instructions.json" --stage finetune --num-negatives 2 --batch-size 8 \
    --max-steps 3 --lr 1e-3 --query-max-length "$qlen" --passage-max-length 24 --threads 1 -q \
    --attention "$attention" --pooling "$pooling" --include-prompt "$include_prompt" -o "$tmp/$name" || continue
  expect_grep "\"include_prompt\": $include_prompt" "$tmp/$name/1_Pooling/config.json"
  files="tokenizer.json tokenizer_config.json"
  [ "$kind" = unigram ] && files="$files tokenizer.model"
  for f in $files; do
    checks=$((checks + 1))
    [ -s "$tmp/$name/$f" ] || { echo "FAIL: $name lacks $f"; failures=$((failures + 1)); }
  done
  class=Qwen2Tokenizer
  [ "$kind" = unigram ] && class=PreTrainedTokenizerFast
  expect_grep "\"tokenizer_class\": \"$class\"" "$tmp/$name/tokenizer_config.json"
  expect_rc 0 "$embed" -q -m "$tmp/$name" --output-format tokens "$tmp/texts.jsonl" -o "$tmp/$name.ids.jsonl"
  expect_rc 0 "$embed" -q -m "$tmp/$name" "$tmp/texts.jsonl" -o "$tmp/$name.plain.npy"
  expect_rc 0 "$embed" -q -m "$tmp/$name" --prompt retrieval "$tmp/texts.jsonl" -o "$tmp/$name.retrieval.npy"
  expect_rc 0 "$py" - "$tmp/$name" "$tmp/texts.jsonl" "$tmp/$name" "$kind" "$include_prompt" <<'PY'
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
model_dir, texts_path, out, kind, include_prompt = sys.argv[1:6]
texts = [json.loads(l)["text"] for l in open(texts_path)]
st = SentenceTransformer(model_dir, device="cpu")
# Token ids: what sentence-transformers feeds the model (its tokenizer, truncated
# at max_seq_length) against kalm-embed's.
want_ids = [json.loads(l)["ids"] for l in open(out + ".ids.jsonl")]
tok = st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]
assert tok == want_ids, [(t, a, b) for t, a, b in zip(texts, tok, want_ids) if a != b][:3]
assert any(len(t) == st.max_seq_length for t in tok), "no text reached max_seq_length"
if kind == "unigram":
    unk = st.tokenizer.unk_token_id
    assert any(unk in t for t in tok), "no text exercised the unk piece"
else:
    assert st.tokenizer.unk_token_id is None  # byte-level: every byte has a token
    assert type(st.tokenizer).__name__ == "Qwen2Tokenizer", type(st.tokenizer).__name__
# Embeddings, plain and with the export's retrieval prompt.
assert "retrieval" in st.prompts, st.prompts
pooling = st[1]
assert pooling.include_prompt == (include_prompt == "true"), pooling.include_prompt
for variant, kw in (("plain", {}), ("retrieval", {"prompt_name": "retrieval"})):
    want = st.encode(texts, batch_size=4, convert_to_numpy=True, **kw)
    got = np.load(f"{out}.{variant}.npy")
    assert got.shape == want.shape, (got.shape, want.shape)
    err = np.abs(got - want).max()
    assert err <= 1e-5, f"{model_dir} {variant}: max abs diff {err:.3g}"
    print(f"{model_dir.rsplit('/', 1)[-1]} {variant}: max abs diff {err:.2e}")
PY
  [ -s "$tmp/out" ] && sed 's/^/  /' "$tmp/out"
done

# The tokenizer.json is what makes transformers 5 agree: the same export with
# only tokenizer.model and the old LlamaTokenizer config gets other ids there.
name=gemma3_bidirectional_mean_unigram
if [ -d "$tmp/$name" ]; then
  mkdir -p "$tmp/spm_only"
  cp "$tmp/$name/tokenizer.model" "$tmp/spm_only/"
  printf '{"tokenizer_class": "LlamaTokenizer", "legacy": true, "add_bos_token": false, "add_eos_token": false, "unk_token": "<unk>", "pad_token": "<unk>"}\n' \
    >"$tmp/spm_only/tokenizer_config.json"
  expect_rc 0 "$py" - "$tmp/spm_only" "$tmp/texts.jsonl" "$tmp/$name.ids.jsonl" <<'PY'
import json, sys
from transformers import AutoTokenizer
d, texts_path, ids_path = sys.argv[1:4]
texts = [json.loads(l)["text"] for l in open(texts_path)]
kalm = [json.loads(l)["ids"] for l in open(ids_path)]
got = AutoTokenizer.from_pretrained(d)(texts, truncation=True, max_length=24)["input_ids"]
assert sum(a != b for a, b in zip(got, kalm)) >= 3, "transformers now reads a bare tokenizer.model as kalm does"
PY
fi
finish
