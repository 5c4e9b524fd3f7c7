#!/usr/bin/env bash
# Builds and tests kalm against the oldest LibTorch it supports (pip's torch
# 2.11.0, CMakeLists.txt: KALM_OLDEST_TORCH), in its own virtual environment and
# build directory, so the main .venv/build stay on the current pin.
#
#   scripts/build-oldest-torch.sh            set up, build, run every test
#   KALM_OLDEST_TESTS=unit scripts/build-oldest-torch.sh   (ctest label filter)
#
# The pin set is scripts/python-requirements.txt with only torch replaced, so the
# oracles are the same ones the main build is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
oldest_torch=$(sed -n 's/^set(KALM_OLDEST_TORCH \([0-9.]*\))$/\1/p' CMakeLists.txt)
[ -n "$oldest_torch" ] || { echo "build-oldest-torch: KALM_OLDEST_TORCH not found in CMakeLists.txt" >&2; exit 1; }
venv=$root/.venv-torch-$oldest_torch
build=$root/build-torch-$oldest_torch
mkdir -p "$venv"
requirements=$venv/requirements-oldest.txt
sed "s/^torch==.*/torch==$oldest_torch.0/" scripts/python-requirements.txt > "$requirements.new"
grep -q "^torch==$oldest_torch.0$" "$requirements.new" || { echo "build-oldest-torch: no torch pin to replace" >&2; exit 1; }
mv "$requirements.new" "$requirements"

KALM_VENV=$venv KALM_BUILD_DIR=$build KALM_REQUIREMENTS=$requirements scripts/setup.sh
"$build/tools/kalm-embed" --version
label=()
[ -n "${KALM_OLDEST_TESTS:-}" ] && label=(-L "$KALM_OLDEST_TESTS")
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "${label[@]}"
