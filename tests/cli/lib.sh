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
