#!/usr/bin/env bash
# timed.sh SECONDS_FILE COMMAND [ARG]...: run COMMAND; when it succeeds, write
# its wall time in seconds to SECONDS_FILE (the report's stage timings).
# COMMAND's exit status is passed on; on failure SECONDS_FILE is not written.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: timed.sh SECONDS_FILE COMMAND [ARG]..." >&2; exit 2; fi
out=$1; shift
start=$(date +%s.%N)
"$@"
end=$(date +%s.%N)
awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }' > "$out.tmp"
mv "$out.tmp" "$out"
