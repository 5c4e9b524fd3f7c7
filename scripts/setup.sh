#!/usr/bin/env bash
# kalm set-up: install every Debian package the project needs, make OpenBLAS the
# active BLAS, install the test oracles that come from npm, and build.
# Idempotent and non-interactive; run as root or as a user with sudo.
#
#   scripts/setup.sh            install + configure + build into ./build
#   KALM_BUILD_DIR=dir scripts/setup.sh
#   KALM_SETUP_SKIP_BUILD=1 scripts/setup.sh   (packages only)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
build_dir=${KALM_BUILD_DIR:-$root/build}

if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive

# Build and run-time dependencies (README, "Dependencies", says why each is here).
packages=(
  g++ cmake ninja-build pkg-config git ccache
  libtorch-dev libopenblas0-openmp
  libsentencepiece-dev sentencepiece
  libsimdjson-dev libcli11-dev libzstd-dev zstd doctest-dev
  libgloo-dev libpcre2-dev libutf8proc-dev
  # tests and benchmarks: oracles and peers from Debian and npm
  python3 python3-numpy python3-scipy python3-sklearn python3-faiss python3-torch python3-sentencepiece
  # the default experiment: its driver, data, plots
  make wordnet-base dict-gcide dict-freedict-eng-fra dict-freedict-eng-spa gnuplot-nox
  # a man-page example (kalm-mine-negatives) that tests/cli/man_examples.sh runs
  jq
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may already come from elsewhere (e.g. NodeSource, which bundles npm);
# only ask Debian for it when there is none.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's LibTorch multiplies matrices through the generic libblas.so.3; with the
# reference implementation that is ~30x slower than OpenBLAS. Pin the alternative.
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
openblas=/usr/lib/$arch/openblas-openmp/libblas.so.3
if [ -e "$openblas" ]; then
  current=$(readlink -f "/usr/lib/$arch/libblas.so.3" || true)
  if [ "$current" != "$(readlink -f "$openblas")" ]; then
    $SUDO update-alternatives --set "libblas.so.3-$arch" "$openblas" >/dev/null
    $SUDO update-alternatives --set "liblapack.so.3-$arch" \
      "/usr/lib/$arch/openblas-openmp/liblapack.so.3" >/dev/null
  fi
else
  echo "setup: error: $openblas missing; libopenblas0-openmp did not install" >&2
  exit 1
fi

# npm oracles for the tokenizer parity tests (Hugging Face tokenizers and the
# Qwen3/Gemma3 tokenizer files); installed into a git-ignored folder.
if [ -x tests/fixtures/tokenizers/install_oracle.sh ]; then
  tests/fixtures/tokenizers/install_oracle.sh
fi

[ "${KALM_SETUP_SKIP_BUILD:-0}" = 1 ] && exit 0

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
echo "setup: built kalm in $build_dir" >&2
