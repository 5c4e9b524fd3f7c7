#!/usr/bin/env bash
# kalm set-up: install every Debian package the project needs, install PyTorch
# and the test oracles from PyPI into the project-local virtual environment
# .venv, and build kalm against that PyTorch's LibTorch (the one users of a
# pip-installed PyTorch have).
# Idempotent and non-interactive; run as root or as a user with sudo.
#
#   scripts/setup.sh            install + configure + build into ./build
#   KALM_BUILD_DIR=dir scripts/setup.sh
#   KALM_VENV=dir scripts/setup.sh             (another virtual environment)
#   KALM_REQUIREMENTS=file scripts/setup.sh    (another pin set, e.g. the oldest
#                                               supported torch: scripts/build-oldest-torch.sh)
#   KALM_SETUP_SKIP_BUILD=1 scripts/setup.sh   (packages only)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
build_dir=${KALM_BUILD_DIR:-$root/build}
venv=${KALM_VENV:-$root/.venv}
requirements=${KALM_REQUIREMENTS:-$root/scripts/python-requirements.txt}

if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive

# Build and run-time dependencies (README, "Dependencies", says why each is here).
packages=(
  g++ cmake ninja-build pkg-config git ccache
  libsentencepiece-dev sentencepiece
  libsimdjson-dev libcli11-dev libzstd-dev zstd doctest-dev
  libgloo-dev libpcre2-dev libutf8proc-dev
  # the search's float32 products on AMD CPUs (dlopen()ed; README, "Dependencies")
  libblis4-openmp libopenblas0-openmp
  # the virtual environment for PyTorch and the oracles (tests and benchmarks only)
  python3 python3-venv
  # the default experiment: its driver, data, plots
  make wordnet-base dict-gcide dict-freedict-eng-fra dict-freedict-eng-spa dict-freedict-eng-deu
  dict-freedict-eng-ita dict-freedict-eng-nld dict-freedict-eng-por dict-freedict-eng-swe
  dict-freedict-fra-eng dict-freedict-spa-eng dict-freedict-ita-eng dict-freedict-nld-eng
  dict-freedict-por-eng dict-freedict-swe-eng gnuplot-nox
  # Makefile.pipeline (a task's instruction from instructions.json) and a
  # man-page example (kalm-mine-negatives) that tests/cli/man_examples.sh runs
  jq
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PyTorch (its LibTorch is what kalm builds against) and the oracles, pinned.
# The stamp records which requirements file the environment was made from, so a
# changed pin reinstalls and an unchanged one costs nothing.
stamp="$venv/.kalm-requirements"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating the virtual environment $venv" >&2
  python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
  echo "setup: installing $(grep -cv '^\s*\(#\|$\)' "$requirements") pinned Python packages into $venv (PyPI)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
torch_prefix=$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')

# The real Qwen3/Gemma3 tokenizer files of the parity tests, from shared/.
tests/fixtures/tokenizers/stage_real_tokenizers.sh

[ "${KALM_SETUP_SKIP_BUILD:-0}" = 1 ] && exit 0

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# pip's torch is built with CUDA: its CMake package looks for the CUDA toolkit
# (nvcc). kalm itself has no CUDA code; CUDA_TOOLKIT_ROOT_DIR only helps CMake
# find a toolkit that is installed outside PATH.
cuda=()
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda=(-DCUDAToolkit_ROOT=/usr/local/cuda -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "${cuda[@]}" \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DKALM_PYTHON="$venv/bin/python" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
echo "setup: built kalm in $build_dir against $("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)')" >&2
