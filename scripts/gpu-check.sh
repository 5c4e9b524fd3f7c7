#!/usr/bin/env bash
# The GPU check: builds kalm on a GPU machine against the PyTorch installed
# there (pip's torch with CUDA) and runs what needs a GPU, each step under a
# timeout, logs under $OUT (or ./gpu-check-out). Made for the project's lent
# H200 machine (../shared/docs/gpu-machine.md): its Python venv has torch,
# transformers and sentence-transformers but no pkg-config or Debian -dev
# packages, so those travel as Debian 12 .debs in .debs/ (git-ignored; fetch
# them with `scripts/gpu-check.sh --fetch-debs` on a Debian machine first).
#
#   scripts/gpu-check.sh --fetch-debs        # here: download the .debs
#   scripts/gpu-check.sh                     # there: build + GPU tests
#   PYTHON=/path/to/python scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
debs=(pkgconf-bin libpkgconf3 libsimdjson-dev libsimdjson14 libcli11-dev libzstd-dev libzstd1 doctest-dev
      libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 libsentencepiece-dev libsentencepiece0 libgloo-dev)
if [ "${1:-}" = --fetch-debs ]; then
  mkdir -p .debs && (cd .debs && apt-get download "${debs[@]}")
  exit
fi

out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
py=${PYTHON:-/opt/torch/.venv/bin/python}
export PATH="$(dirname "$py"):/usr/local/cuda/bin:$PATH"
step() {  # step NAME SECONDS CMD...: run with a timeout, log to $out/NAME.log, print the verdict
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t0)) s"
  tail -n "${TAIL:-15}" "$out/$name.log"
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c 'import torch, transformers, sentence_transformers as st; print("torch", torch.__version__, "| transformers", transformers.__version__, "| sentence-transformers", st.__version__)'

# Debian -dev packages unpacked into a prefix, with a pkg-config that finds them.
deps=/tmp/kalm-deps
mkdir -p "$deps"
for f in .debs/*.deb; do dpkg -x "$f" "$deps"; done
lib=$deps/usr/lib/x86_64-linux-gnu
printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s/usr/bin/pkgconf "$@"\n' "$lib" "$deps" >/tmp/kalm-pkgconf
chmod +x /tmp/kalm-pkgconf
export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$deps/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$deps

build=/tmp/kalm-build
torch_prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
step configure 300 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKALM_BUILD_BENCH=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" -DPKG_CONFIG_EXECUTABLE=/tmp/kalm-pkgconf \
  -DCMAKE_CXX_FLAGS="-I$deps/usr/include" -DKALM_PYTHON="$py" -DKALM_GLOO_INCLUDE_DIR="$deps/usr/include" || exit 1
step build 480 cmake --build "$build" -j"$(nproc)" || { TAIL=60 step build-errors 5 grep -m 40 -B2 -A6 "error" "$out/build.log"; exit 1; }
"$build/tools/kalm-embed" --version

# Unit tests: the CUDA cases (model forward, training steps and resume on cuda
# vs cpu) run where a GPU is visible. unit_text needs the staged real
# tokenizers, which do not travel; the CPU machine runs it.
# The search's BLIS/OpenBLAS cases need Debian's runtime libraries, which this
# machine lacks (it searches with LibTorch's BLAS); they are skipped, not failed.
KALM_TEST_BLAS_OPTIONAL=1 \
  step unit 420 ctest --test-dir "$build" --output-on-failure -j4 -R '^unit_(io|model|encode|search|eval|loss|train|mine)$'
# The pip-LibTorch paths of issue 12 and the transformers 5 / sentence-transformers 6 parity, with this
# machine's versions of both.
step cli 420 ctest --test-dir "$build" --output-on-failure -j4 \
  -R '^(cli_(st_v6_parity|train_checkpoints|embed|max_length)|source_rules)$'

# The v5 fixtures on the GPU: kalm-embed --device cuda (f32) against sentence-transformers' CPU output.
cat >"$out/cuda_parity.py" <<'PY'
import subprocess, sys, numpy as np, safetensors.numpy
exe, fx, tmp = sys.argv[1:4]
want = safetensors.numpy.load_file(fx + "/expected.safetensors")
worst = 0.0
for key in sorted(want):
    name, variant = key.split(".")
    args = [exe, "-q", "-m", f"{fx}/{name}", "--no-normalize", "--device", "cuda", f"{fx}/texts.jsonl", "-o",
            f"{tmp}/{key}.npy"] + (["--prompt", "query"] if variant == "query" else [])
    subprocess.run(args, check=True)
    got = np.load(f"{tmp}/{key}.npy")
    err = float((np.abs(got - want[key]).max(axis=1) / np.linalg.norm(want[key], axis=1)).max())
    worst = max(worst, err)
    print(f"{key}: relative error {err:.3g}")
print("worst", worst)
sys.exit(0 if worst <= 1e-5 else 1)
PY
mkdir -p /tmp/kalm-cuda
step cuda_parity 120 "$py" "$out/cuda_parity.py" "$build/tools/kalm-embed" tests/fixtures/models_v5 /tmp/kalm-cuda
# Issue 15's figures: kalm-embed against sentence-transformers on this GPU, same texts (short and long),
# 0.5B shape, bf16 and f32. Needs the real Qwen3 tokenizer: carry .oracle/tokenizers/qwen3 (11 MB).
for dtype in bf16 f32; do
  step "embed_st_$dtype" 300 "$py" bench/embed/st_peer.py --kalm-embed "$build/tools/kalm-embed" \
    --tokenizer-dir .oracle/tokenizers/qwen3 --device cuda --dtype "$dtype" --st-batch 256 --short 20000 --long 2000
done
# Issue 14's figures: kalm-train tokens/s against the GPU's measured bf16 matmul rate (0.5B shape, batch 32 and
# batch 256 with GradCache), and a CUDA resume that must give the same bytes.
step train_bench 420 bench/gpu/train.sh "$build" "$py" "$out/train-bench"
# Issue 15's search on the GPU, embeddings already there (1M x 896 corpus, 10k queries, top-10), f32 and
# the certified bf16 pass, each against the same blocks' matrix products alone (the bound).
step search_build 300 sh -c "cmake -S . -B '$build' -DKALM_BUILD_BENCH=ON >/dev/null && \
  cmake --build '$build' --target kalm-bench-search"
mkdir -p /tmp/kalm-search
step search_gen 180 "$build/bench/search/kalm-bench-search" gen /tmp/kalm-search 1000000 10000 896
for p in f32 bf16; do
  KALM_SEARCH_DEVICE=cuda step "search_cuda_$p" 180 "$build/bench/search/kalm-bench-search" run /tmp/kalm-search 10 "$p"
done
echo "gpu-check: done"
