#!/usr/bin/env bash
# Record-reading speed and memory against `zstd -dc FILE | wc -l`, both on one core.
#
#   bench/io/run.sh BUILD/bench/io/kalm-bench-io [BYTES] [WORKDIR]
#
# BYTES: decompressed size of the generated file (default 1e9). WORKDIR: where the
# file goes (default a fresh directory under ${TMPDIR:-/tmp}, removed at the end).
# Builds nothing. Each timing is the best of 3 runs (wall clock).
# Target (issue 2): kalm's typed reader at >= 0.5x the speed of zstd -dc | wc -l.
set -euo pipefail

bin=${1:?usage: run.sh PATH/TO/kalm-bench-io [BYTES] [WORKDIR]}
bytes=${2:-1e9}
if [[ $# -ge 3 ]]; then
  work=$3
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/kalm-bench-io.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
file=$work/groups.jsonl.zst
for tool in zstd wc taskset; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 1; }
done

"$bin" generate -o "$file" --bytes "$bytes"
echo "file: $(stat -c %s "$file") bytes compressed"

now() { date +%s.%N; }
best=""
best_of_3() {  # best wall-clock seconds of "$@" over 3 runs; the last run's stdout is kept
  best=""
  for _ in 1 2 3; do
    local t0 t1
    t0=$(now)
    "$@" >"$work/out.txt"
    t1=$(now)
    best=$(awk -v a="$t0" -v b="$t1" -v c="$best" 'BEGIN { t = b - a; if (c == "" || t < c) c = t; printf "%.3f", c }')
  done
}

best_of_3 taskset -c 0 sh -c "zstd -dc '$file' | wc -l"
t_zstd=$best
lines=$(cat "$work/out.txt")
echo "zstd -dc | wc -l (1 core):      $t_zstd s  ($lines lines)"

best_of_3 taskset -c 0 "$bin" read "$file" --mode lines
echo "kalm LineReader (1 core):       $best s  | $(cat "$work/out.txt")"

best_of_3 taskset -c 0 "$bin" read "$file" --mode groups
t_kalm=$best
echo "kalm TrainingGroups (1 core):   $t_kalm s  | $(cat "$work/out.txt")"

awk -v z="$t_zstd" -v k="$t_kalm" 'BEGIN {
  r = z / k
  printf "speed ratio kalm/zstd|wc: %.2f (target >= 0.5): %s\n", r, (r >= 0.5 ? "PASS" : "FAIL")
}'
