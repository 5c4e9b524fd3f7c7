# kalm-eval --qrels/--run: trec_eval's numbers as JSON, against the committed
# trec_eval 9.0.8 outputs in tests/fixtures/eval/trec/.
. "$(dirname "$0")/lib.sh"
exe="$KALM_BIN/kalm-eval"
trec="$KALM_SOURCE_DIR/tests/fixtures/eval/trec"
PY=${KALM_PYTHON:?KALM_PYTHON must name the Python with the oracles (scripts/setup.sh)}

for case in basic ties large; do
  expect_rc 0 "$exe" --qrels "$trec/$case.qrels" --run "$trec/$case.run" --per-query && {
    # Every measure of trec_eval's "all" rows that kalm reports must match.
    checks=$((checks + 1))
    if ! "$PY" - "$tmp/out" "$trec/$case.expected" <<'PYEOF'
import json, sys
report = json.load(open(sys.argv[1]))
n = 0
for line in open(sys.argv[2]):
    name, qid, value = line.split()
    if qid != "all" or name not in report["all"]:
        continue
    got = report["all"][name]
    if abs(got - float(value)) > 1e-4 * max(1, abs(float(value))):
        sys.exit(f"{name}: kalm {got}, trec_eval {value}")
    n += 1
if n < 10:
    sys.exit(f"only {n} measures compared")
PYEOF
    then echo "FAIL: $case: JSON differs from trec_eval"; failures=$((failures + 1)); fi
  }
done

# Per-query objects only with --per-query.
expect_rc 0 "$exe" --qrels "$trec/basic.qrels" --run "$trec/basic.run" && {
  expect_grep '"all"' "$tmp/out"
  checks=$((checks + 1))
  if grep -q '"q1"' "$tmp/out"; then echo "FAIL: per-query output without --per-query"; failures=$((failures + 1)); fi
}
# stdin works for either file.
expect_rc 0 sh -c "'$exe' --qrels '$trec/basic.qrels' --run - < '$trec/basic.run'" && expect_grep '"map"' "$tmp/out"

# Usage errors (exit 2) and bad files (exit 1, with file:line).
expect_rc 2 "$exe" --qrels "$trec/basic.qrels" && expect_grep "^kalm-eval: error: --qrels and --run go together" "$tmp/err"
expect_rc 2 "$exe" --per-query "$trec" && expect_grep "^kalm-eval: error: --per-query" "$tmp/err"
expect_rc 1 "$exe" --qrels "$tmp/missing.qrels" --run "$trec/basic.run" && expect_grep "^kalm-eval: error: .*missing.qrels" "$tmp/err"
printf 'q1 0 d1 1\nq1 0 d2 x\n' > "$tmp/bad.qrels"
expect_rc 1 "$exe" --qrels "$tmp/bad.qrels" --run "$trec/basic.run" && expect_grep "^kalm-eval: error: .*bad.qrels:2" "$tmp/err"
printf 'q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 nan t\n' > "$tmp/bad.run"
expect_rc 1 "$exe" --qrels "$trec/basic.qrels" --run "$tmp/bad.run" && expect_grep "^kalm-eval: error: .*bad.run:2" "$tmp/err"
finish
