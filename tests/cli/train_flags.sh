#!/usr/bin/env bash
# kalm-train / kalm-distill: --oversample repeats a task (= its file given twice),
# --focal-detach and --mix-gradient reach the loss
# (they change the weights after 2 steps exactly where the loss tests say they
# matter, and nothing elsewhere), and kalm-distill --teacher: it trains on
# groups without scores, and gives the weights of scoring the groups first with
# kalm-mine-negatives --scores -m TEACHER and distilling from the records (also
# for a teacher that leaves the instruction out of its pooling), and
# with two data-parallel ranks follows one process.
source "$(dirname "$0")/lib.sh"
unset RANK WORLD_SIZE LOCAL_RANK SLURM_PROCID SLURM_NTASKS SLURM_LOCALID MASTER_ADDR MASTER_PORT  # a launcher around ctest
fx="$KALM_SOURCE_DIR/tests/fixtures/train"
train="$KALM_BIN/kalm-train"
distill="$KALM_BIN/kalm-distill"
mine="$KALM_BIN/kalm-mine-negatives"
py=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}
instruction="Given a question, retrieve the sentence that answers it"  # tasks.json's "retrieval"
common=(--instructions "$fx/instructions.json" --batch-size 8 --lr 1e-3 --warmup-steps 0 --threads 1 -q)
short=(--query-max-length 24 --passage-max-length 24)
# The teacher runs: long enough for the instructed queries (dozens of tokens of
# the small trained tokenizer), which 24 tokens would cut to the instruction alone.
long=(--query-max-length 128 --passage-max-length 128)

# max_diff A B: the largest |a - b| over the tensors of two F32 model.safetensors.
max_diff() {
  $py - "$1" "$2" <<'PY'
import json, struct, sys
import numpy as np
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4").astype(np.float64)
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(a) == sorted(b), "different tensors"
print("%.3e" % max(float(np.abs(a[k] - b[k]).max()) for k in a))
PY
}
# same A B WHAT / differ A B WHAT: model.safetensors of runs A and B (bytes).
same() {
  checks=$((checks + 1))
  cmp -s "$tmp/$1/model.safetensors" "$tmp/$2/model.safetensors" || { echo "FAIL: $3: the weights differ"; failures=$((failures + 1)); }
}
differ() {
  checks=$((checks + 1))
  if [ ! -f "$tmp/$1/model.safetensors" ] || cmp -s "$tmp/$1/model.safetensors" "$tmp/$2/model.safetensors"; then
    echo "FAIL: $3: the weights are identical (or missing)"; failures=$((failures + 1))
  fi
}

if [ ! -x "$py" ] || ! "$py" -c 'import numpy' 2>/dev/null; then
  echo "skip: needs $py with numpy"; exit 77
fi

# --help: the flags exist where they should, with their defaults.
expect_rc 0 "$train" --help
expect_grep '^  --focal-detach' "$tmp/out"
expect_grep '^  --mix-gradient' "$tmp/out"
expect_rc 0 "$distill" --help
expect_grep '^  --focal-detach' "$tmp/out"
expect_grep '^  --mix-gradient' "$tmp/out"
expect_grep '^  --teacher TEXT' "$tmp/out"
expect_rc 2 "$train" "$fx/toy" --teacher "$tmp/x" -o "$tmp/x"

# A base model (its tokenizer trained once) for every run below to start from.
expect_rc 0 "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" "${short[@]}" --init-config "$fx/tiny_qwen2.json" \
  --train-tokenizer 300 --stage pretrain --max-steps 2 -o "$tmp/base"

# Two fine-tuning steps with 3 hard negatives; only the flags vary.
ft() {
  local name=$1; shift
  expect_rc 0 "$train" "$fx/toy/retrieval.jsonl" "$fx/toy/sts.jsonl" --init "$tmp/base" "${common[@]}" \
    "${short[@]}" --num-negatives 3 --max-steps 2 -o "$tmp/$name" "$@"
}
ft focal --focal-gamma 0.5 --mix none
ft focal_detach --focal-gamma 0.5 --mix none --focal-detach
differ focal focal_detach "--focal-detach with gamma 0.5"
ft plain --focal-gamma 0 --mix none
ft plain_detach --focal-gamma 0 --mix none --focal-detach
same plain plain_detach "--focal-detach with gamma 0 (w = 1 has no gradient)"
ft mix --focal-gamma 0 --mix pairwise
ft mix_gradient --focal-gamma 0 --mix pairwise --mix-gradient
differ mix mix_gradient "--mix-gradient with pair-wise mixing"
ft plain_gradient --focal-gamma 0 --mix none --mix-gradient
same plain plain_gradient "--mix-gradient without mixing"

# --oversample sts=2 is sts.jsonl given twice (the same groups in the same
# order: the copies follow all the inputs), so the same weights, and not the
# plain run's. Bad values are usage errors (exit 2).
ft over_flag --focal-gamma 0 --mix none --oversample sts=2
expect_rc 0 "$train" "$fx/toy/retrieval.jsonl" "$fx/toy/sts.jsonl" "$fx/toy/sts.jsonl" --init "$tmp/base" \
  "${common[@]}" "${short[@]}" --num-negatives 3 --max-steps 2 -o "$tmp/over_files" --focal-gamma 0 --mix none
same over_flag over_files "--oversample sts=2 against sts.jsonl given twice"
differ over_flag plain "--oversample sts=2"
expect_rc 2 "$train" "$fx/toy/sts.jsonl" --init "$tmp/base" "${common[@]}" --oversample sts -o "$tmp/over_bad"
expect_grep "--oversample 'sts': no task name \(want TASK=K" "$tmp/err" "--oversample without a factor"
expect_rc 2 "$train" "$fx/toy/sts.jsonl" --init "$tmp/base" "${common[@]}" --oversample retrieval=2 -o "$tmp/over_bad"
expect_grep "--oversample retrieval=2: no input has task 'retrieval' \(tasks: sts\)" "$tmp/err" "--oversample of a task not given"
expect_rc 2 "$train" "$fx/toy/sts.jsonl" --init "$tmp/base" "${common[@]}" --oversample sts=2 --oversample sts=3 -o "$tmp/over_bad"
expect_grep "names task 'sts' twice" "$tmp/err" "--oversample twice"
expect_rc 2 "$train" "$fx/toy/sts.jsonl" --init "$tmp/base" "${common[@]}" --oversample sts=0 -o "$tmp/over_bad"

# kalm-distill takes --focal-detach too (its loss has focal gamma 0.5).
dist() {
  local name=$1; shift
  expect_rc 0 "$distill" "$@" --init "$tmp/base" "${common[@]}" "${short[@]}" --num-negatives 1 -o "$tmp/$name"
}
dist d_focal "$fx/toy/sts.jsonl" --max-steps 2
dist d_focal_detach "$fx/toy/sts.jsonl" --max-steps 2 --focal-detach
differ d_focal d_focal_detach "kalm-distill --focal-detach"

# --teacher: a second model (own seed, own tokenizer) scores the groups.
expect_rc 0 "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" "${long[@]}" --init-config "$fx/tiny_qwen2.json" \
  --train-tokenizer 300 --stage pretrain --max-steps 3 --seed 9 -o "$tmp/teacher"
# Groups without scores, one negative each (so that mining keeps every group
# as it is and both runs sample the same passages). The file name is the task
# (retrieval), whose instruction tasks.json gives.
mkdir -p "$tmp/groups" "$tmp/scored" "$tmp/uninstructed"
$py - "$fx/toy/retrieval.jsonl" "$tmp/groups/retrieval.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        r = json.loads(line)
        out.write(json.dumps({"query": r["query"], "pos": r["pos"], "neg": r["neg"][:1], "type": r["type"]}) + "\n")
PY
# Without --teacher the records need scores (exit 1, naming the record).
expect_rc 1 "$distill" "$tmp/groups" --init "$tmp/base" "${common[@]}" "${long[@]}" --num-negatives 1 -o "$tmp/x"
expect_grep "groups/retrieval.jsonl:[0-9]+: distillation needs teacher scores" "$tmp/err"
# (a) With it, distillation trains: 2 epochs of 2 batches, finite losses with a KL term, a model.
expect_rc 0 "$distill" "$tmp/groups" --teacher "$tmp/teacher" --init "$tmp/base" "${common[@]}" "${long[@]}" --adam-eps 1e-6 \
  --num-negatives 1 --epochs 2 -o "$tmp/d_teacher" --metrics "$tmp/d_teacher.jsonl"
expect_grep '"step": 4,' "$tmp/d_teacher.jsonl"
checks=$((checks + 1))
$py - "$tmp/d_teacher.jsonl" <<'PY' || { echo "FAIL: kalm-distill --teacher: losses not finite or no KL term"; failures=$((failures + 1)); }
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4
assert all(math.isfinite(r["loss"]) and math.isfinite(r["kl"]) and r["kl"] > 0 for r in rows), rows
PY
checks=$((checks + 1)); [ -s "$tmp/d_teacher/model.safetensors" ] || { echo "FAIL: no model from --teacher"; failures=$((failures + 1)); }
expect_grep '"teacher": ' "$tmp/d_teacher/kalm_training.json"
# The teacher must exist (exit 1, naming it).
expect_rc 1 "$distill" "$tmp/groups" --teacher "$tmp/no-teacher" --init "$tmp/base" "${common[@]}" "${long[@]}" \
  --num-negatives 1 -o "$tmp/x"
expect_grep "no-teacher" "$tmp/err"

# (b) The same weights, within 1e-6, as scoring first with kalm-mine-negatives
# (same model, same instruction, same max length) and distilling from the
# records. Not bit for bit: mining embeds all queries and all pool texts in its
# own length-sorted batches (other padding, so other float32 rounding) and takes
# a positive's score from the float32 search, where --teacher embeds each
# training batch's texts and takes float64 dots; the labels differ in the last
# float32 bits. AdamW divides each entry's gradient by sqrt(v) + eps, which
# amplifies such a difference by up to lr/eps on entries whose gradient is
# near zero; --adam-eps 1e-6 caps that (entries with real gradients, |g| >>
# 1e-6, update exactly as with the default). Measured on x86-64: 1.3e-7 (one
# float32 ulp of the norm weights, which sit near 1), and 4.0e-7 with the
# default eps 1e-8. The same runs with the labels of uninstructed queries
# differ by 3e-3, so the bound still catches a teacher that embeds queries
# differently from the student.
expect_rc 0 "$mine" "$tmp/groups/retrieval.jsonl" -m "$tmp/teacher" --existing keep --negatives 1 --scores \
  --max-length 128 --instruction "$instruction" -o "$tmp/scored/retrieval.jsonl" --threads 1 -q
expect_grep '"pos_scores": ?\[' "$tmp/scored/retrieval.jsonl"
expect_rc 0 "$distill" "$tmp/scored/retrieval.jsonl" --init "$tmp/base" "${common[@]}" "${long[@]}" --adam-eps 1e-6 --num-negatives 1 --epochs 2 -o "$tmp/d_scored"
diff_scored=$(max_diff "$tmp/d_teacher/model.safetensors" "$tmp/d_scored/model.safetensors")
checks=$((checks + 1))
$py -c "import sys; sys.exit(0 if float('$diff_scored') <= 1e-6 else 1)" ||
  { echo "FAIL: --teacher vs mined scores: max weight difference $diff_scored > 1e-6"; failures=$((failures + 1)); }
expect_rc 0 "$mine" "$tmp/groups/retrieval.jsonl" -m "$tmp/teacher" --existing keep --negatives 1 --scores \
  --max-length 128 -o "$tmp/uninstructed/retrieval.jsonl" --threads 1 -q
expect_rc 0 "$distill" "$tmp/uninstructed/retrieval.jsonl" --init "$tmp/base" "${common[@]}" "${long[@]}" --adam-eps 1e-6 --num-negatives 1 --epochs 2 \
  -o "$tmp/d_uninstructed"
diff_uninstructed=$(max_diff "$tmp/d_teacher/model.safetensors" "$tmp/d_uninstructed/model.safetensors")
checks=$((checks + 1))
$py -c "import sys; sys.exit(0 if float('$diff_uninstructed') > 1e-5 else 1)" ||
  { echo "FAIL: scores without the instruction should move the weights: $diff_uninstructed"; failures=$((failures + 1)); }
# (c) A teacher that pools with include_prompt=false leaves the instruction
# out as kalm-mine-negatives does: the same weights as its mined scores, within
# the bound of (b); not those of (b)'s teacher pooling the instruction in.
expect_rc 0 "$train" "$fx/toy/retrieval.jsonl" "${common[@]}" "${long[@]}" --init-config "$fx/tiny_qwen2.json" \
  --train-tokenizer 300 --stage pretrain --max-steps 3 --seed 9 --include-prompt false -o "$tmp/teacher_np"
expect_grep '"include_prompt": false' "$tmp/teacher_np/1_Pooling/config.json"
expect_rc 0 "$distill" "$tmp/groups" --teacher "$tmp/teacher_np" --init "$tmp/base" "${common[@]}" "${long[@]}" --adam-eps 1e-6 \
  --num-negatives 1 --epochs 2 -o "$tmp/d_teacher_np"
mkdir -p "$tmp/scored_np"
expect_rc 0 "$mine" "$tmp/groups/retrieval.jsonl" -m "$tmp/teacher_np" --existing keep --negatives 1 --scores \
  --max-length 128 --instruction "$instruction" -o "$tmp/scored_np/retrieval.jsonl" --threads 1 -q
expect_rc 0 "$distill" "$tmp/scored_np/retrieval.jsonl" --init "$tmp/base" "${common[@]}" "${long[@]}" --adam-eps 1e-6 \
  --num-negatives 1 --epochs 2 -o "$tmp/d_scored_np"
diff_np=$(max_diff "$tmp/d_teacher_np/model.safetensors" "$tmp/d_scored_np/model.safetensors")
diff_np_pooled=$(max_diff "$tmp/d_teacher_np/model.safetensors" "$tmp/d_teacher/model.safetensors")
checks=$((checks + 1))
$py -c "import sys; sys.exit(0 if float('$diff_np') <= 1e-6 and float('$diff_np_pooled') > 1e-5 else 1)" ||
  { echo "FAIL: include_prompt=false teacher: vs its mined scores $diff_np (want <= 1e-6), vs (b) $diff_np_pooled (want > 1e-5)"
    failures=$((failures + 1)); }
# A query cut to 8 tokens is all instruction for that teacher: a data error
# naming the record (the student pools the instruction in, so it has no such
# limit).
expect_rc 1 "$distill" "$tmp/groups" --teacher "$tmp/teacher_np" --init "$tmp/base" "${common[@]}" \
  --query-max-length 8 --passage-max-length 128 --num-negatives 1 --max-steps 1 -o "$tmp/x_np"
expect_grep "groups/retrieval.jsonl:[0-9]+ \(query\): the query's 8 tokens under the teacher .* are all instruction" "$tmp/err" \
  "all-instruction query for the teacher"
if data_parallel_built; then
# Data parallel: each rank scores its own groups and the labels are gathered;
# two ranks of batch 4 follow one process of batch 8 (losses and KL to 1e-4
# relative, as train_parallel.sh checks without a teacher).
dp=("$tmp/groups" --teacher "$tmp/teacher" --init "$tmp/base" --instructions "$fx/instructions.json" --lr 1e-3
    --warmup-steps 0 --threads 1 -q "${long[@]}" --num-negatives 1 --epochs 2)
expect_rc 0 "$distill" "${dp[@]}" --batch-size 8 -o "$tmp/dp1" --metrics "$tmp/dp1.jsonl"
"$distill" "${dp[@]}" --batch-size 4 --world-size 2 --rank 1 --dist-store "$tmp/store" -o "$tmp/dp2" 2>"$tmp/rank1.err" &
pid=$!
expect_rc 0 "$distill" "${dp[@]}" --batch-size 4 --world-size 2 --rank 0 --dist-store "$tmp/store" -o "$tmp/dp2" \
  --metrics "$tmp/dp2.jsonl"
wait "$pid"; rc=$?
checks=$((checks + 1)); [ "$rc" -eq 0 ] || { echo "FAIL: rank 1 exited $rc"; cat "$tmp/rank1.err"; failures=$((failures + 1)); }
checks=$((checks + 1))
$py - "$tmp/dp1.jsonl" "$tmp/dp2.jsonl" <<'PY' || { echo "FAIL: --teacher with 2 ranks differs from 1 process"; failures=$((failures + 1)); }
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
assert len(a) == len(b) == 4
for x, y in zip(a, b):
    for k in ("loss", "kl"):
        assert abs(x[k] - y[k]) <= 1e-4 * abs(x[k]), (k, x[k], y[k])
PY
fi

echo "max weight difference: --teacher vs mined scores $diff_scored; vs mined without the instruction $diff_uninstructed; include_prompt=false teacher vs its mined scores $diff_np, vs the teacher pooling the instruction in $diff_np_pooled"

# --symmetric-loss and duplicate masking reach the loss: the metrics carry the
# passage-to-query term, copies of positives in the toy batches are counted,
# and the weights differ from the one-directional run's and from a run that
# keeps the copies as negatives.
base=(--init "$tmp/base" --stage finetune --num-negatives 2 --max-steps 2 "${common[@]}" "${long[@]}")
expect_rc 0 "$train" "$fx/toy" "${base[@]}" -o "$tmp/sym0" --metrics "$tmp/sym0.jsonl"
expect_rc 0 "$train" "$fx/toy" "${base[@]}" --symmetric-loss -o "$tmp/sym1" --metrics "$tmp/sym1.jsonl"
expect_rc 0 "$train" "$fx/toy" "${base[@]}" --keep-duplicate-negatives -o "$tmp/sym2" --metrics "$tmp/sym2.jsonl"
expect_grep '"backward": [0-9]' "$tmp/sym1.jsonl" "symmetric metrics"
expect_grep '"masked_duplicates": [1-9]' "$tmp/sym0.jsonl" "duplicates masked in the toy batches"
expect_grep '"masked_duplicates": 0[,}]' "$tmp/sym2.jsonl" "--keep-duplicate-negatives"
for v in sym1 sym2; do
  checks=$((checks + 1))
  d=$(max_diff "$tmp/sym0/model.safetensors" "$tmp/$v/model.safetensors")
  if ! awk -v d="$d" 'BEGIN { exit !(d > 1e-6) }'; then echo "FAIL: $v leaves the weights unchanged ($d)"; failures=$((failures + 1)); fi
done

# --include-prompt false: a template that does not end with {query} is refused
# before anything is trained (exit 2); a query that is all instruction once cut
# to --query-max-length is a data error naming its record (exit 1); neither
# leaves anything in the output directory (not even the tokenizer it trained).
tok=(--init-config "$fx/tiny_qwen2.json" --train-tokenizer 300 --instructions "$fx/instructions.json"
     --include-prompt false --batch-size 8 --max-steps 1 --threads 1 -q)
expect_rc 2 "$train" "$fx/toy" "${tok[@]}" --instruction-template "{query} -- {instruction}" -o "$tmp/ip_template"
expect_grep "does not end with \{query\}" "$tmp/err" "template refusal"
expect_rc 1 "$train" "$fx/toy" "${tok[@]}" --query-max-length 8 -o "$tmp/ip_short"
expect_grep "retrieval.jsonl:[0-9]+ \(query\): .* are all instruction" "$tmp/err" "all-instruction query"
for d in ip_template ip_short; do
  checks=$((checks + 1))
  if [ -n "$(ls -A "$tmp/$d" 2>/dev/null)" ]; then echo "FAIL: $d left $(ls -A "$tmp/$d")"; failures=$((failures + 1)); fi
done
expect_rc 2 "$train" "$fx/toy" "${tok[@]}" --include-prompt maybe -o "$tmp/ip_bad"

finish
