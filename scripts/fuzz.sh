#!/usr/bin/env bash
# Builds kalm's libFuzzer targets (tests/fuzz/) with clang and runs each one in
# turn for a fixed time, from a scratch copy of its committed seed corpus.
#
#   scripts/fuzz.sh                        every target, 600 s each
#   scripts/fuzz.sh fuzz_config_json ...   only these
#   KALM_FUZZ_SECONDS=60 scripts/fuzz.sh   another duration per target
#
# Environment:
#   KALM_FUZZ_SECONDS     seconds per target (default 600)
#   KALM_FUZZ_BUILD_DIR   build directory (default build-fuzz)
#   KALM_FUZZ_BUILD_JOBS  parallel compile jobs (default: all cores)
#   KALM_FUZZ_ARGS        extra libFuzzer flags, e.g. "-jobs=2 -workers=2" or "-seed=1"
#
# Installs clang, its runtimes (libFuzzer, sanitizers) and libomp from Debian
# when missing (as root or with sudo, like scripts/setup.sh); the other build
# dependencies are setup.sh's. Each target's corpus grows in
# <build>/corpus/<target>/ (a fresh copy of tests/fuzz/corpus/<target>/ per
# run, so the committed seeds stay small); a crash, leak, timeout (10 s) or
# out-of-memory (2 GB) input lands in <build>/artifacts/<target>/ and its log in
# <build>/logs/<target>.log. Prints per target the runs, the coverage and the
# verdict; exits 1 if any target found something (2 on a usage error).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
build=${KALM_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${KALM_FUZZ_SECONDS:-600}
jobs=${KALM_FUZZ_BUILD_JOBS:-$(nproc)}
all_targets=(fuzz_jsonl_records fuzz_safetensors_header fuzz_tokenizer_json fuzz_config_json fuzz_task_json)

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  case " ${all_targets[*]} " in
    *" $t "*) ;;
    *) echo "fuzz.sh: unknown target '$t' (targets: ${all_targets[*]})" >&2; exit 2 ;;
  esac
done
case "$seconds" in
  '' | *[!0-9]*) echo "fuzz.sh: KALM_FUZZ_SECONDS must be a whole number of seconds" >&2; exit 2 ;;
esac

# ---- clang and its runtimes --------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
have_fuzzer_runtime() {
  command -v clang++ >/dev/null 2>&1 || return 1
  local dir
  dir=$(clang++ -print-resource-dir 2>/dev/null) || return 1
  ls "$dir"/lib/linux/libclang_rt.fuzzer-*.a "$dir"/lib/*/libclang_rt.fuzzer*.a >/dev/null 2>&1
}
packages=(clang libclang-rt-dev libomp-dev cmake ninja-build pkg-config
          libsimdjson-dev libcli11-dev libzstd-dev libpcre2-dev libutf8proc-dev zstd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || ! have_fuzzer_runtime; then
  echo "fuzz.sh: installing ${missing[*]:-clang libclang-rt-dev}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]:-clang}" libclang-rt-dev >/dev/null
fi
have_fuzzer_runtime || { echo "fuzz.sh: clang's libFuzzer runtime (libclang_rt.fuzzer) not found" >&2; exit 1; }

# ---- build -------------------------------------------------------------------
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
cmake -S "$root/tests/fuzz" -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

# ---- run -----------------------------------------------------------------------
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
mkdir -p "$build/logs"
summary=()
failed=0
for t in "${targets[@]}"; do
  corpus=$build/corpus/$t
  artifacts=$build/artifacts/$t
  log=$build/logs/$t.log
  rm -rf "$corpus"
  mkdir -p "$corpus" "$artifacts"
  cp "$root/tests/fuzz/corpus/$t/"* "$corpus/"
  before=$(find "$artifacts" -type f | wc -l)
  echo "fuzz.sh: $t for ${seconds} s (log: ${log#"$root"/})" >&2
  rc=0
  # shellcheck disable=SC2086  # KALM_FUZZ_ARGS is a list of flags
  "$build/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -dict="$root/tests/fuzz/json.dict" -artifact_prefix="$artifacts/" -print_final_stats=1 \
    ${KALM_FUZZ_ARGS:-} "$corpus" >"$log" 2>&1 || rc=$?
  after=$(find "$artifacts" -type f | wc -l)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  status_line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$status_line")
  elapsed=$(sed -n 's/.*Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
    verdict="FINDING (exit $rc; see ${log#"$root"/} and ${artifacts#"$root"/}/)"
    failed=1
  else
    verdict="no finding"
  fi
  line="$t: ${elapsed:-?} s, ${runs:-?} runs, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}: $verdict"
  echo "fuzz.sh: $line" >&2
  summary+=("$line")
done

echo "fuzz.sh: summary ($(clang++ --version | head -1), ${seconds} s per target)"
for line in "${summary[@]}"; do echo "  $line"; done
exit $failed
