#!/usr/bin/env bash
# Docs are tested (design.md 17): the long options a tool's --help lists and the
# options its man page documents must be the same set. For each page the test
# lists every option present in one but not the other.
#
# What counts as documented: the option terms of the page's OPTIONS section
# (from "# OPTIONS" to the next "# " heading), i.e. the one-line terms of the
# pandoc definition lists, the line right before a ":" definition line (one
# blank line between them allowed). Every --long-name in a term counts, so one
# term may document several options ("**--dedup**, **--no-dedup**"). A term that
# starts with "SUB: " documents the subcommand SUB (compared with
# `TOOL SUB --help`); the tool's own terms are the others.
# From --help: CLI11's option lines, "  -o,--output TEXT=- ...": the first word,
# split on commas, with negation defaults ("--x,--no-x{false}") stripped.
#
# kalm-distill's page documents only its own options and refers to kalm-train(1)
# for the rest: its --help options may be documented on either page, but what
# its own page documents must exist in kalm-distill.
. "$(dirname "$0")/lib.sh"
src=${KALM_SOURCE_DIR:?}
man="$src/man"

# Mismatches of pages this test cannot fix itself (kalm-train.1.md is edited
# elsewhere): reported, not failed. An entry that no longer occurs fails, so the
# list only shrinks. Format: the lines compare() prints.
known_gaps=$(cat <<'EOF'
EOF
)

# help_options TOOL [SUBCOMMAND]: the long options of --help, sorted, one a line.
# A subcommand's own -h,--help is left out: the tool's page documents --help once.
help_options() {
  "$KALM_BIN/$1" ${2:+"$2"} --help 2>/dev/null | grep -E '^  -' | awk '{print $1}' | tr ',' '\n' |
    sed 's/{[^}]*}//g' | grep -E '^--[A-Za-z0-9]' | { if [ -n "${2:-}" ]; then grep -vx -- --help; else cat; fi; } |
    sort -u
}

# option_terms PAGE: the term lines of the OPTIONS section.
option_terms() {
  awk '
    /^# / { in_options = ($0 ~ /^# OPTIONS[[:space:]]*$/); prev = ""; blanks = 0; next }
    !in_options { next }
    /^[[:space:]]*$/ { blanks++; next }
    /^:/ { if (prev != "" && blanks <= 1) print prev; prev = ""; blanks = 0; next }
    { prev = ($0 ~ /^[[:space:]]/) ? "" : $0; blanks = 0 }
  ' "$1"
}

# man_options PAGE [SUBCOMMAND]: the long options the page documents (for the
# tool itself, or for SUBCOMMAND), sorted, one a line.
man_options() {
  if [ -n "${2:-}" ]; then
    option_terms "$1" | grep -E "^$2: " | sed -E "s/^$2: //"
  else
    option_terms "$1" | grep -vE '^[a-z][a-z0-9-]*: '
  fi | grep -oE -- '--[A-Za-z0-9][A-Za-z0-9-]*' | sort -u
}

# compare WHAT HELP_FILE OWN_FILE [INHERITED_FILE]: prints one line per option in
# --help but documented nowhere, and per documented option that --help lacks.
# Returns 1 when there is any.
compare() {
  local what=$1 help=$2 own=$3 inherited=${4:-/dev/null} bad=0 o
  for o in $(sort -u "$own" "$inherited" | comm -23 "$help" -); do
    echo "  $what: $o is in --help but not in the man page"; bad=1
  done
  for o in $(comm -13 "$help" "$own"); do
    echo "  $what: $o is in the man page but not in --help"; bad=1
  done
  return $bad
}

# check TOOL PAGE [SUBCOMMAND] [INHERITED_PAGE]
check() {
  local tool=$1 page=$2 sub=${3:-} inherited=${4:-}
  local what="$tool${sub:+ $sub}"
  checks=$((checks + 1))
  help_options "$tool" "$sub" > "$tmp/help"
  man_options "$page" "$sub" > "$tmp/own"
  : > "$tmp/inherited"
  [ -n "$inherited" ] && man_options "$inherited" > "$tmp/inherited"
  # Guards against an extraction that silently finds nothing.
  if [ "$(wc -l < "$tmp/help")" -lt 2 ]; then
    echo "FAIL: $what: too few options found in --help ($(wc -l < "$tmp/help"))"
    failures=$((failures + 1)); return
  fi
  compare "$what" "$tmp/help" "$tmp/own" "$tmp/inherited" > "$tmp/diff"
  grep -vxF -- "$known_gaps" "$tmp/diff" > "$tmp/new_gaps"
  grep -xF -- "$known_gaps" "$tmp/diff" >> "$tmp/seen_gaps"
  if [ -s "$tmp/new_gaps" ]; then
    echo "FAIL: $what: --help and $(basename "$page") disagree:"; cat "$tmp/new_gaps"
    failures=$((failures + 1))
  fi
}
: > "$tmp/seen_gaps"

for tool in kalm-embed kalm-eval kalm-mine-negatives kalm-synth-filter kalm-train; do
  check "$tool" "$man/$tool.1.md"
done
check kalm-synth-filter "$man/kalm-synth-filter.1.md" prompts
check kalm-train "$man/kalm-train.1.md" soup
check kalm-distill "$man/kalm-distill.1.md" "" "$man/kalm-train.1.md"

# Known gaps: still there (reported), or gone (then the list is stale).
checks=$((checks + 1))
while IFS= read -r gap; do
  [ -n "$gap" ] || continue  # an empty list reads as one empty line
  if grep -qxF -- "$gap" "$tmp/seen_gaps"; then
    echo "note (known gap, not failed):$gap"
  else
    echo "FAIL: known gap no longer occurs; remove it from known_gaps:$gap"; failures=$((failures + 1))
  fi
done <<< "$known_gaps"

# The checker itself: a page that drops an option, or documents one that does
# not exist, must be caught (and named).
checks=$((checks + 1))
grep -v -- '^\*\*--near-dup-k\*\*' "$man/kalm-synth-filter.1.md" |
  sed 's/^\*\*--rejects\*\* \*FILE\*$/**--rejects** *FILE*, **--no-such-option**/' > "$tmp/mutated.md"
help_options kalm-synth-filter > "$tmp/help"
man_options "$tmp/mutated.md" > "$tmp/own"
if compare self-test "$tmp/help" "$tmp/own" > "$tmp/diff" ||
   ! grep -q -- '--near-dup-k is in --help but not' "$tmp/diff" ||
   ! grep -q -- '--no-such-option is in the man page but not' "$tmp/diff"; then
  echo "FAIL: the checker misses a dropped or an invented option:"; cat "$tmp/diff"
  failures=$((failures + 1))
fi
finish
