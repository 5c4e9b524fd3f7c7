# Shared helpers for the CLI tests (sourced; not a test itself).
set -u
KALM_BIN=${KALM_BIN:?KALM_BIN must point at the built tools}
failures=0
checks=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect_rc WANT CMD...: run CMD, capture stdout/stderr into $tmp/out, $tmp/err.
expect_rc() {
  local want=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  checks=$((checks + 1))
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL: '$*' exited $rc, expected $want"; sed 's/^/  stderr: /' "$tmp/err" | head -5
    failures=$((failures + 1))
    return 1
  fi
}
# expect_grep PATTERN FILE [what]
expect_grep() {
  checks=$((checks + 1))
  if ! grep -qE -- "$1" "$2"; then
    echo "FAIL: ${3:-$2} does not match /$1/"; sed 's/^/  | /' "$2" | head -5
    failures=$((failures + 1))
  fi
}
expect_no_file() {
  checks=$((checks + 1))
  if [ -e "$1" ] || ls "$(dirname "$1")"/.*kalm-tmp* >/dev/null 2>&1; then
    echo "FAIL: $1 (or a temporary) was left behind"; failures=$((failures + 1))
  fi
}
finish() {
  echo "$((checks - failures)) passed, $failures failed"
  [ "$failures" -eq 0 ]
}

# require_dictionaries: skip (exit 77) unless the default experiment's inputs
# (WordNet and the dictd files; WORDNET_DIR / DICTD_DIR override) are installed.
require_dictionaries() {
  local wn=${WORDNET_DIR:-/usr/share/wordnet} dictd=${DICTD_DIR:-/usr/share/dictd} f
  for f in "$wn/data.noun" "$dictd/gcide.dict.dz" $(for l in fra spa deu ita nld por swe; do echo "$dictd/freedict-eng-$l.dict.dz"; done); do
    if [ ! -r "$f" ]; then
      echo "SKIP: $f missing (apt install wordnet-base dict-gcide dict-freedict-eng-{fra,spa,deu,ita,nld,por,swe})"
      exit 77
    fi
  done
}

# data_parallel_built: true unless this build has no data parallelism
# (KALM_HAVE_GLOO=OFF from CMake: c10d's Gloo headers were not found, as with a
# pip torch). require_data_parallel: in such a build, check that kalm-train
# refuses two processes with the reason, then skip (exit 77).
data_parallel_built() { [ "${KALM_HAVE_GLOO:-ON}" != OFF ]; }
require_data_parallel() {
  data_parallel_built && return 0
  expect_rc 2 "$KALM_BIN/kalm-train" "$KALM_SOURCE_DIR/tests/fixtures/train/toy" --world-size 2 --rank 0 \
    --dist-store "$tmp/store" --init-config "$KALM_SOURCE_DIR/tests/fixtures/train/tiny_qwen2.json" \
    --train-tokenizer 300 -q -o "$tmp/no-gloo"
  expect_grep "built without data parallelism" "$tmp/err"
  finish
  echo "SKIP: this build has no data parallelism (KALM_HAVE_GLOO=OFF)"
  exit 77
}
