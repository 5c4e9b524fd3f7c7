# Makefile.pipeline end to end on the default experiment's data with tiny step
# counts: every stage runs, the report names every stage and task, the plots
# are PNGs, a second `make` has nothing to do (make -q), changing one knob
# rebuilds only what depends on it, and the ablation target adds its columns.
# Skips (77) when the dictionaries are not installed.
command -v gnuplot >/dev/null || { echo "SKIP: gnuplot missing (apt install gnuplot-nox)"; exit 77; }
. "$(dirname "$0")/lib.sh"
require_dictionaries
cd "$KALM_SOURCE_DIR"
out="$tmp/run"
knobs=(OUT="$out" BIN="$KALM_BIN" THREADS=1 PRE_STEPS=20 TEACHER_PRE_STEPS=20 FT_STEPS=10 DS_STEPS=5 FT_EVERY=64 PRE_BATCH=64 FT_BATCH=16)

expect_rc 0 make -f Makefile.pipeline "${knobs[@]}" -j2 || tail -20 "$tmp/out" "$tmp/err"
report="$out/report/report.md"
checks=$((checks + 1))
if [ ! -s "$report" ]; then echo "FAIL: no report"; failures=$((failures + 1)); else cat "$report"; fi
for stage in baseline untrained pretrain ladder-L1 finetune teacher-pretrain teacher distill soup finetune-noinstr soup-noinstr; do
  expect_grep "^\| task \| split \| metric \|.* $stage \|" "$report" "report header ($stage)"
done
for task in gcide-define gcide-wn-paraphrase wn-define wn-lexname-cls wn-lexname-clu wn-pair wn-rerank wn-sts fd-bitext; do
  expect_grep "^\| $task \| [a-z-]+ \| [a-z_0-9]+ \| [0-9.]+ \|" "$report" "report row ($task)"
done
# The final model against each task's lexical baseline (BM25 or TF-IDF), with and without instructions.
for task in gcide-define:BM25 wn-rerank:BM25 wn-sts:TF-IDF wn-pair:TF-IDF wn-lexname-cls:TF-IDF wn-lexname-clu:TF-IDF fd-bitext:TF-IDF; do
  expect_grep "^- ${task%%:*}( [a-z-]+)? \([a-z_0-9]+\): soup [0-9.]+ against ${task#*:} [0-9.]+: (ahead|\*\*behind\*\*)$" "$report" "baseline line (${task%%:*})"
  expect_grep "^- ${task%%:*}( [a-z-]+)? \([a-z_0-9]+\): soup-noinstr [0-9.]+ against ${task#*:} [0-9.]+: " "$report" "baseline line (${task%%:*}, noinstr)"
done
# Every stage and the baseline scored: no '-' in the full-width table.
checks=$((checks + 1))
if awk '/^## Every stage/ { on = 1 } /^### / { on = 0 } on && /^\| [a-z]/ && !/^\| task/ { n = split($0, c, "|"); for (i = 5; i < n; i++) if (c[i] ~ /^ *- *$/) bad = 1 } END { exit !bad }' "$report"; then
  echo "FAIL: a stage has no score in the report"; failures=$((failures + 1))
fi
for png in loss stages matryoshka; do
  checks=$((checks + 1))
  if [ "$(head -c 4 "$out/report/$png.png" 2>/dev/null | od -An -tx1 | tr -d ' ')" != "89504e47" ]; then
    echo "FAIL: $png.png is not a PNG"; failures=$((failures + 1))
  fi
done
# The embedding stage wrote one row per GCIDE corpus document.
checks=$((checks + 1))
emb=$(ls "$out"/embeddings/*/gcide-corpus.safetensors 2>/dev/null | head -1)
# The safetensors header is JSON after an 8-byte length; the shape is in it.
if [ -z "$emb" ] || ! head -c 4096 "$emb" | tr -d '\000 ' | grep -q '"embeddings":{[^}]*"shape":\[10000,256\]'; then
  echo "FAIL: embeddings missing or wrong shape: $(head -c 4096 "$emb" 2>/dev/null | tr -d '\000' | head -c 300)"
  failures=$((failures + 1))
fi
# Rejects streams exist for every filtered and mined task.
checks=$((checks + 1))
if [ "$(ls "$out"/filtered/*.rejects.jsonl.zst "$out"/mined-*/*.rejects.jsonl.zst 2>/dev/null | wc -l)" -lt 11 ]; then
  echo "FAIL: rejects files missing"; failures=$((failures + 1))
fi

# The final model at its stable path: the soup (with the pre-trained model in it, SOUP_BASE=yes).
checks=$((checks + 1))
if [ "$(readlink "$out/final")" != "models/$(basename "$(ls -d "$out"/models/*-soup-b | head -1)")" ] ||
   [ ! -f "$out/final/model.safetensors" ]; then
  echo "FAIL: $out/final is not the soup: $(ls -l "$out/final")"; failures=$((failures + 1))
fi
expect_grep "trained with task instructions" "$report" "report states the instructions"
# The 0-layer model pools without the instruction (include_prompt=false) and
# has no attention for it to act through: one-word queries (gcide-define's
# headwords) score the same with and without it.
ft=$(ls -d "$out"/eval/finetune-*-mrl[0-9_]* | grep -v -e '-noinstr$' -e '-ablate-' | head -1)
checks=$((checks + 1))
if [ -z "$ft" ] || [ "$(grep '^gcide-define ' "$ft/results.txt")" != "$(grep '^gcide-define ' "$ft-noinstr/results.txt")" ]; then
  echo "FAIL: the instruction changed a 0-layer include_prompt=false model's gcide-define scores"
  grep -h '^gcide-define ' "$ft/results.txt" "$ft-noinstr/results.txt"; failures=$((failures + 1))
fi
# Mining embedded each task's queries with that task's instruction (.meta.json).
expect_grep '"instruction": "Given a word or a list of synonyms' "$(ls "$out"/mined-*/wn-lemma-def.jsonl.zst.meta.json | head -1)" \
  "mining's instruction"

# Nothing changed: nothing to do.
expect_rc 0 make -q -f Makefile.pipeline "${knobs[@]}"
# One knob changed: the distillation (and what follows) reruns, pre-training does not.
expect_rc 0 make -n -f Makefile.pipeline "${knobs[@]}" DS_LR=1e-4 && {
  expect_grep "kalm-distill" "$tmp/out" "make -n after DS_LR changed"
  expect_grep "ln -sfn models/.*-lr1e-4-a[^ ]*-soup-b [^ ]*/final.tmp" "$tmp/out" "final follows the new soup"
  expect_grep "kalm-train soup -o [^ ]*-lr1e-4-a[^ ]*-soup-b [^ ]*/models/pretrain-L0-[^ ]* [^ ]*/models/finetune-[^ ]*mrl[0-9_]* [^ ]*-lr1e-4-a[^ ]*ts[0-9.]*$" \
    "$tmp/out" "the soup averages the pre-trained, fine-tuned and distilled models"
  checks=$((checks + 1))
  if grep -q -- "--stage pretrain" "$tmp/out"; then echo "FAIL: DS_LR retrains the pretrain stage"; failures=$((failures + 1)); fi
}
# The two pre-trainings are one grouped target run side by side, but a teacher
# knob retrains the teacher only: the base model (and all after it) stays.
base_model=$(ls "$out"/models/pretrain-L0-*-n20-*/model.safetensors | head -1)
base_dir=${base_model%/model.safetensors}
base_mtime=$(stat -c %Y "$base_model")
teacher_dir=$(ls -d "$out"/models/teacher-pretrain-L0-*-n20-*/ | head -1)
teacher_dir=${teacher_dir%/}
sleep 1
expect_rc 0 make -f Makefile.pipeline "${knobs[@]}" TEACHER_PRE_STEPS=3 "${teacher_dir/-n20-/-n3-}/model.safetensors"
checks=$((checks + 1))
if [ "$(stat -c %Y "$base_model")" != "$base_mtime" ] || [ ! -f "${teacher_dir/-n20-/-n3-}/model.safetensors" ]; then
  echo "FAIL: TEACHER_PRE_STEPS=3 retrained the base model or built no teacher"; failures=$((failures + 1))
fi
expect_rc 0 make -q -f Makefile.pipeline "${knobs[@]}"
# One of the pair failing stops the other (here the base model, asked for
# 100000 steps) and fails make at once.
expect_rc 2 make -f Makefile.pipeline "${knobs[@]}" PRE_STEPS=100000 TEACHER_PRE_LR=abc "${base_dir/-n20-/-n100000-}/model.safetensors"
expect_grep "Could not convert: --lr = abc" "$tmp/err" "the teacher's failure"
# kalm-train stops at a step boundary on TERM (it checkpoints first): give it time.
for _ in $(seq 60); do pgrep -f -- "--max-steps 100000" >/dev/null || break; sleep 0.5; done
checks=$((checks + 1))
if pgrep -f -- "--max-steps 100000" >/dev/null; then
  echo "FAIL: the base model's run survived the teacher's failure"; failures=$((failures + 1))
  pkill -f -- "--max-steps 100000"
fi
# SOUP_BASE=no: the soup of the fine-tuned and distilled models only, under its own name.
expect_rc 0 make -n -f Makefile.pipeline "${knobs[@]}" SOUP_BASE=no && {
  expect_grep "kalm-train soup -o [^ ]*ts[0-9.]*-soup [^ ]*/models/finetune-[^ ]*mrl[0-9_]* [^ ]*ts[0-9.]*$" "$tmp/out" "SOUP_BASE=no"
}
# PRESET=gpu (not run here: no GPU): a 4-layer model on cuda in bf16, its own
# output directory, a ladder from 0 to 8 layers; an unknown preset is refused.
expect_rc 0 make -n -f Makefile.pipeline PRESET=gpu OUT="$tmp/gpu" BIN="$KALM_BIN" && {
  expect_grep "kalm-train .*--init-config $tmp/gpu/configs/qwen2-L4-d384-h6-kv2-f1536-v16000.json" "$tmp/out" "PRESET=gpu model"
  expect_grep "^ *--train-tokenizer 16000 .*--batch-size 1024 --bpe-dropout 0.1 .*--device cuda --dtype bf16" "$tmp/out" "PRESET=gpu pre-training"
  expect_grep "^ *--train-tokenizer 16000 .*--oversample fd-eng-fra=4 .*--oversample fd-eng-swe=8 --oversample gcide-wn-def=6 " "$tmp/out" "the small FreeDict sets and the definition pairs oversampled"
  expect_grep "pretrain-L8-d384-.*-seeded" "$tmp/out" "PRESET=gpu ladder"
  expect_grep "teacher-pretrain-L8-d512-" "$tmp/out" "PRESET=gpu teacher"
}
expect_rc 2 make -n -f Makefile.pipeline PRESET=tpu OUT="$tmp/tpu" && expect_grep "PRESET must be cpu or gpu" "$tmp/err"
expect_rc 2 make -n -f Makefile.pipeline SOUP_BASE=maybe OUT="$tmp/sb" && expect_grep "SOUP_BASE must be yes or no, got 'maybe'" "$tmp/err"

# The ablation target: fine-tune variants, one column each.
expect_rc 0 make -f Makefile.pipeline "${knobs[@]}" ablation -j2 || tail -20 "$tmp/out" "$tmp/err"
for variant in no-pretrain no-focal no-mixing no-matryoshka no-hard-negatives causal keep-duplicates include-prompt; do
  expect_grep "^\| task .* ablate-$variant \|" "$report" "ablation column $variant"
done
finish
