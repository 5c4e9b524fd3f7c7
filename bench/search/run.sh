#!/usr/bin/env bash
# bench/search: kalm exact top-k vs faiss IndexFlatIP (faiss-cpu from PyPI, in the
# project's Python: KALM_PYTHON, default .venv/bin/python) on the same vectors, in
# the same run. Each round runs kalm with float32 products (the library
# KALM_SEARCH_BLAS / auto picks, and LibTorch's BLAS beside it when that is
# another one), kalm's bf16 first pass with certified f32 rescoring
# (--search-precision bf16), its int8 first pass (--search-precision int8,
# where the CPU has VNNI), and faiss, one after the other, so that a machine
# whose speed drifts (a shared VM) slows all of them alike. Prints each round's
# times, the ratios of the medians, and id agreement of each with faiss.
#   bench/search/run.sh BUILD_DIR [N Q D K [ROUNDS]]
set -euo pipefail
build=${1:-build}; n=${2:-100000}; q=${3:-10000}; d=${4:-896}; k=${5:-10}; rounds=${6:-3}
src=$(cd "$(dirname "$0")/../.." && pwd)
python=${KALM_PYTHON:-$src/.venv/bin/python}
bin=$build/bench/search/kalm-bench-search
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
faiss_env=()
"$bin" gen "$dir" "$n" "$q" "$d"

# faiss-cpu's wheel bundles its own OpenBLAS (0.3.15 in faiss 1.15.1), which
# may not know a newer CPU and fall back to generic SSE3 kernels ("Prescott"):
# 4.8x slower on a 2-core Intel Xeon (model 207) than with its SkylakeX kernels.
# A peer run below its best says nothing, so such a fallback is overridden
# with the kernels the CPU can run, and said so.
faiss_openblas=$("$python" -c '
import faiss
from threadpoolctl import threadpool_info
print(" ".join(i.get("architecture") or "?" for i in threadpool_info()
               if i.get("internal_api") == "openblas" and "faiss" in i.get("filepath", "")))' 2>/dev/null || true)
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [[ " $faiss_openblas " == *" Prescott "* ]]; then
  if grep -qw avx512f /proc/cpuinfo; then export_coretype=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export_coretype=Haswell
  else export_coretype=; fi
  if [ -n "$export_coretype" ]; then
    echo "faiss: its OpenBLAS took generic kernels (Prescott) on this CPU; running it with OPENBLAS_CORETYPE=$export_coretype"
    faiss_env=(OPENBLAS_CORETYPE="$export_coretype")
  fi
fi
echo "faiss OpenBLAS kernels: ${faiss_openblas:-unknown}${faiss_env:+ -> ${faiss_env[*]}}"

# kalm RUN_NAME PRECISION [ENV=VALUE...]: one search; appends its seconds to DIR/RUN_NAME.secs
kalm() {
  local name=$1 precision=$2 out
  out=$(env "${@:3}" "$bin" run "$dir" "$k" "$precision")
  echo "$out" | grep -E "seconds|products|rescored|fallbacks" | sed "s/^/$name: /"
  echo "$out" | awk '/kalm_seconds/{print $2}' >> "$dir/$name.secs"
  echo "$out" | awk '/kalm_f32_products/{print $2}' > "$dir/$name.products"
  mv "$dir/kalm_ids.npy" "$dir/kalm_ids_$name.npy"
  mv "$dir/kalm_scores.npy" "$dir/kalm_scores_$name.npy"
}
runs=(f32 bf16)
# The int8 pass runs where the CPU has VNNI int8 dot products (kalm refuses it elsewhere).
int8=no
if grep -qwE 'avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo; then int8=yes; runs+=(int8); fi
for r in $(seq "$rounds"); do
  echo "== round $r"
  kalm f32 f32
  kalm bf16 bf16
  [ "$int8" = no ] || kalm int8 int8
  if [ "$(cat "$dir/f32.products")" != torch ]; then
    kalm f32_torch f32 KALM_SEARCH_BLAS=torch
    [ "$r" -gt 1 ] || runs+=(f32_torch)
  fi
  env "${faiss_env[@]}" "$python" - "$dir" "$k" <<'PY'
import sys, time, numpy as np, faiss
d, k = sys.argv[1], int(sys.argv[2])
xb = np.load(d + "/corpus.npy"); xq = np.load(d + "/queries.npy")
index = faiss.IndexFlatIP(xb.shape[1]); index.add(xb)
t0 = time.time(); D, I = index.search(xq, k); fs = time.time() - t0
print(f"faiss_seconds {fs:.3f}  faiss_threads {faiss.omp_get_max_threads()}  faiss {faiss.__version__}")
open(d + "/faiss.secs", "a").write(f"{fs}\n")
np.save(d + "/faiss_ids.npy", I); np.save(d + "/faiss_scores.npy", D)
PY
done

echo "== summary (medians of $rounds rounds)"
"$python" - "$dir" "${runs[@]}" <<'PY'
import sys, numpy as np
d, runs = sys.argv[1], sys.argv[2:]
secs = lambda name: [float(x) for x in open(f"{d}/{name}.secs").read().split()]
faiss_s = float(np.median(secs("faiss")))
I = np.load(d + "/faiss_ids.npy"); D = np.load(d + "/faiss_scores.npy")
print(f"faiss: seconds {' / '.join(f'{s:.2f}' for s in secs('faiss'))}  median {faiss_s:.2f}")
for name in runs:
    products = open(f"{d}/{name}.products").read().strip()
    ki = np.load(f"{d}/kalm_ids_{name}.npy"); ks = np.load(f"{d}/kalm_scores_{name}.npy")
    same = (ki == I).all(axis=1)
    # Rows that differ must differ only by near-exact ties (float32 sums in another order).
    diff_rows = np.where(~same)[0]
    tie_ok = all(np.allclose(np.sort(ks[r]), np.sort(D[r]), atol=1e-5) for r in diff_rows)
    s = secs(name); m = float(np.median(s))
    label = f" (f32 products: {products})" if name.startswith("f32") else ""
    print(f"{name}{label}: seconds {' / '.join(f'{x:.2f}' for x in s)}  median {m:.2f}  "
          f"ratio faiss/kalm = {faiss_s / m:.2f} (per round {' / '.join(f'{f / x:.2f}' for f, x in zip(secs('faiss'), s))})")
    print(f"{name}: rows_identical {same.sum()}/{len(same)}  differing_rows_are_ties {tie_ok}  "
          f"max_score_diff {np.abs(ks - D).max():.2e}")
PY
