#!/usr/bin/env bash
# The GPU check: builds kalm on a GPU machine against the PyTorch installed
# there (pip's torch with CUDA) and runs what needs a GPU, each step under a
# timeout cut to what is left of one overall budget, most important first.
# Made for the project's lent machines (../shared/docs/gpu-machine.md): a
# Python venv with torch, transformers and sentence-transformers but no
# pkg-config or Debian -dev packages, so those travel as Debian 12 .debs in
# .debs/ (git-ignored; `scripts/gpu-check.sh --fetch-debs` on a Debian machine).
#
#   scripts/gpu-check.sh --fetch-debs         # here: download the .debs
#   scripts/gpu-check.sh [PHASE...]           # there: build + GPU tests
#   scripts/gpu-check.sh --cpu BUILD [PHASE...]  # here: the same steps on the CPU,
#                                             # small shapes, an existing build
#
# Phases, in the order they run (default: all): build unit parity train
# embed-bf16 search embed-f32 cli. A lent machine gives ~15 minutes in all and
# at most 10 per command: run everything in one call with KALM_GPU_BUDGET a
# minute under the call's timeout; whatever the budget cut off can follow in a
# second call on the still-warm machine (the build in build-gpu/ is kept), e.g.
# `scripts/gpu-check.sh build search embed-f32` (the build then takes seconds).
# The device tool brings back at most 8 files from $OUT: the check leaves
# there summary.txt (every step's verdict and the figures), logs.tar.gz and
# traces.tar.gz (Chrome traces of a training step and of embedding batches,
# by kalm's --profile: open them in ui.perfetto.dev); the full logs stay in
# build-gpu/check-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
debs=(pkgconf-bin libpkgconf3 libsimdjson-dev libsimdjson14 libcli11-dev libzstd-dev libzstd1 doctest-dev
      libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 libsentencepiece-dev libsentencepiece0 libgloo-dev)
if [ "${1:-}" = --fetch-debs ]; then
  mkdir -p .debs && (cd .debs && apt-get download "${debs[@]}")
  exit
fi

device=cuda
build=$PWD/build-gpu
py=${PYTHON:-/opt/torch/.venv/bin/python}
if [ "${1:-}" = --cpu ]; then
  # The dry run: every step's command line, script and parser exercised on the
  # CPU with small shapes, so that the GPU's minutes are not spent on a typo.
  device=cpu
  build=$(cd "${2:?--cpu needs the build directory}" && pwd)
  py=${PYTHON:-$PWD/.venv/bin/python}
  shift 2
fi
phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(build unit parity train embed-bf16 search embed-f32 cli)
for p in "${phases[@]}"; do
  case $p in build|unit|parity|train|embed-bf16|search|embed-f32|cli) ;; *) echo "gpu-check: unknown phase '$p'" >&2; exit 2;; esac
done

out=${OUT:-$PWD/gpu-check-out}
logs=$build/check-logs
mkdir -p "$out" "$logs"
rm -f "$logs"/trace-*.json  # a trace comes back with the call that made it
summary=$out/summary.txt
: >"$summary"
budget=${KALM_GPU_BUDGET:-540}
deadline=$((SECONDS + budget))
export PATH="$(dirname "$py"):/usr/local/cuda/bin:$PATH"

ran=()  # this run's step logs
note() { echo "$*" | tee -a "$summary"; }
step() {  # step NAME SECONDS CMD...: run with a timeout (cut to the budget left), log, print the verdict
  local name=$1 secs=$2; shift 2
  local left=$((deadline - SECONDS - 5))
  if [ "$left" -lt 20 ]; then
    note "== $name: skipped, ${left} s of the ${budget} s budget left"
    return 124
  fi
  [ "$secs" -le "$left" ] || secs=$left
  local t0=$SECONDS
  ran+=("$logs/$name.log")
  timeout "$secs" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  note "== $name: rc=$rc in $((SECONDS - t0)) s (limit $secs s)"
  tail -n "${TAIL:-15}" "$logs/$name.log"
  return $rc
}
wants() { local p; for p in "${phases[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }
finish() {
  note "== gpu-check: $1 after $SECONDS s"
  # The figures of this run's steps, gathered where the device tool's output tail shows them.
  [ ${#ran[@]} -eq 0 ] ||
    grep -h -E 'tokens_per_s|tokens/s|ratio|min cosine|worst|bit-identical|DIFFERENT|TFLOP|share|seconds|passed|failed' \
      "${ran[@]}" 2>/dev/null | grep -v -E '^\s*$' | tail -n 60 >>"$summary"
  [ ${#ran[@]} -eq 0 ] || tar -C "$logs" -czf "$out/logs.tar.gz" "${ran[@]##*/}" 2>/dev/null
  # The Chrome traces of kalm-train --profile and kalm-embed --profile runs (ui.perfetto.dev).
  local traces; traces=$(cd "$logs" && ls trace-*.json 2>/dev/null)
  [ -z "$traces" ] || tar -C "$logs" -czf "$out/traces.tar.gz" $traces 2>/dev/null
  echo "---- summary ($summary)"
  cat "$summary"
}

# Sizes: the issue's shapes on the GPU; small ones for the CPU dry run.
if [ "$device" = cuda ]; then
  layers=24 vocab=151936 short=20000 long=2000 st_batch=256 search_n=1000000 search_q=10000 ctest_j=8 train_s=330
else
  # (train.sh's dozen runs take ~5.5 minutes on 2 cores even at these sizes)
  layers=2 vocab=32000 short=200 long=20 st_batch=32 search_n=20000 search_q=500 ctest_j=2 train_s=600
fi

if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"
fi
"$py" -c 'import torch, transformers, sentence_transformers as st; print("torch", torch.__version__, "| transformers", transformers.__version__, "| sentence-transformers", st.__version__)' | tee -a "$summary"

if wants build && [ "$device" = cuda ]; then
  # Debian -dev packages unpacked into a prefix, with a pkg-config that finds them.
  deps=/tmp/kalm-deps
  if [ ! -d "$deps/usr" ]; then
    ls .debs/*.deb >/dev/null 2>&1 || { note "no .debs/: run scripts/gpu-check.sh --fetch-debs here and carry .debs"; finish failed; exit 1; }
    mkdir -p "$deps"
    for f in .debs/*.deb; do dpkg -x "$f" "$deps"; done
  fi
  lib=$deps/usr/lib/x86_64-linux-gnu
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s/usr/bin/pkgconf "$@"\n' "$lib" "$deps" >/tmp/kalm-pkgconf
  chmod +x /tmp/kalm-pkgconf
  export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$deps/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$deps
  torch_prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  step configure 120 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKALM_BUILD_BENCH=ON \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" -DPKG_CONFIG_EXECUTABLE=/tmp/kalm-pkgconf \
    -DCMAKE_CXX_FLAGS="-I$deps/usr/include" -DKALM_PYTHON="$py" -DKALM_GLOO_INCLUDE_DIR="$deps/usr/include" \
    || { finish failed; exit 1; }
  # The tools, the unit tests that have CUDA cases and the two benches the check runs; the
  # rest of the tests (CPU only) build in the cli phase if it is reached.
  step build 360 cmake --build "$build" -j"$(nproc)" --target kalm-embed kalm-train kalm-eval kalm-mine-negatives \
      kalm-synth-filter kalm-distill kalm-bench-search \
      unit_io unit_model unit_encode unit_search unit_eval unit_loss unit_train unit_mine \
    || { TAIL=60 step build-errors 5 grep -m 40 -B2 -A6 "error" "$logs/build.log"; finish failed; exit 1; }
  "$build/tools/kalm-embed" --version | tee -a "$summary"
fi

# Unit tests: the CUDA cases (model forward, training steps and resume on cuda
# vs cpu, GPU search = CPU search) run where a GPU is visible. unit_text needs
# the staged real tokenizers, which do not travel; the CPU machine runs it.
# The search's BLIS/OpenBLAS cases need Debian's runtime libraries, which the
# GPU machine lacks (it searches with LibTorch's BLAS); they skip there.
if wants unit; then
  KALM_TEST_BLAS_OPTIONAL=1 \
    step unit 300 ctest --test-dir "$build" --output-on-failure -j"$ctest_j" \
      -R '^unit_(io|model|encode|search|eval|loss|train|mine)$'
fi

# The v5 fixtures on the device: kalm-embed (f32) against sentence-transformers' CPU output.
if wants parity; then
  mkdir -p /tmp/kalm-parity
  step parity 120 "$py" bench/gpu/embed_parity.py "$build/tools/kalm-embed" tests/fixtures/models_v5 /tmp/kalm-parity \
    "$device"
fi

# Issue 14's figures: kalm-train tokens/s against the device's measured bf16 matmul rate (0.5B shape,
# batch 32 and batch 256 with GradCache), a resume that must give the same bytes, and issue 16's
# one-rank NCCL group against the plain run.
if wants train; then
  DEVICE=$device LAYERS=$layers VOCAB=$vocab step train "$train_s" bench/gpu/train.sh "$build" "$py" /tmp/kalm-train-bench
  cp /tmp/kalm-train-bench/trace-*.json "$logs"/ 2>/dev/null
fi

# Issue 15's figures: kalm-embed against sentence-transformers on this device, same texts (short and
# long), 0.5B shape. Needs the real Qwen3 tokenizer: carry .oracle/tokenizers/qwen3 (11 MB).
embed_st() {
  step "embed-$1" 240 "$py" bench/embed/st_peer.py --kalm-embed "$build/tools/kalm-embed" \
    --tokenizer-dir .oracle/tokenizers/qwen3 --device "$device" --dtype "$1" --layers "$layers" \
    --st-batch "$st_batch" --short "$short" --long "$long" ${2:+--kalm-profile "$2"}
}
wants embed-bf16 && embed_st bf16 "$logs"

# Issue 15's search on the device, embeddings already there (corpus x 896, top-10), f32 and the
# certified bf16 pass, each against the same blocks' matrix products alone (the bound).
if wants search; then
  mkdir -p /tmp/kalm-search
  if step search-gen 120 "$build/bench/search/kalm-bench-search" gen /tmp/kalm-search "$search_n" "$search_q" 896; then
    for p in f32 bf16; do
      KALM_SEARCH_DEVICE=$device step "search-$p" 150 "$build/bench/search/kalm-bench-search" run /tmp/kalm-search 10 "$p"
    done
  fi
fi

wants embed-f32 && embed_st f32

# The pip-LibTorch paths of issue 12 and the transformers 5 / sentence-transformers 6 parity, with this
# machine's versions of both (CPU tests; last, since the CPU machine runs them too).
if wants cli; then
  [ "$device" = cpu ] || step build-cli 240 cmake --build "$build" -j"$(nproc)"
  step cli 240 ctest --test-dir "$build" --output-on-failure -j"$ctest_j" \
    -R '^(cli_(st_v6_parity|train_checkpoints|embed|max_length)|source_rules)$'
fi
finish done
