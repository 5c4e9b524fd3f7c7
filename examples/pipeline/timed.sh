#!/usr/bin/env bash
# timed.sh SECONDS_FILE COMMAND [ARG]...: run COMMAND; when it succeeds, write
# its wall time in seconds to SECONDS_FILE (the report's stage timings).
# COMMAND's exit status is passed on; on failure SECONDS_FILE is not written.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: timed.sh SECONDS_FILE COMMAND [ARG]..." >&2; exit 2; fi
out=$1; shift
start=$(date +%s.%N)
# In the background so that a TERM or INT (make stopping a side-by-side run,
# Ctrl-C) reaches COMMAND too instead of leaving it running on its own.
"$@" <&0 &
child=$!
trap 'kill "$child" 2>/dev/null || true; wait "$child" || true; exit 143' TERM INT
wait "$child"
trap - TERM INT
end=$(date +%s.%N)
awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }' > "$out.tmp"
mv "$out.tmp" "$out"
