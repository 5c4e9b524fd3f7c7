#!/usr/bin/env bash
# bench/search: kalm exact top-k vs faiss IndexFlatIP (faiss-cpu from PyPI, in the
# project's Python: KALM_PYTHON, default .venv/bin/python) on the same vectors, in
# the same run. kalm runs twice: f32 products, then the bf16 first pass with
# certified f32 rescoring (--search-precision bf16). Prints the times, the
# ratios, and id agreement of each with faiss.
#   bench/search/run.sh BUILD_DIR [N Q D K]
set -euo pipefail
build=${1:-build}; n=${2:-100000}; q=${3:-10000}; d=${4:-896}; k=${5:-10}
src=$(cd "$(dirname "$0")/../.." && pwd)
python=${KALM_PYTHON:-$src/.venv/bin/python}
bin=$build/bench/search/kalm-bench-search
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
"$bin" gen "$dir" "$n" "$q" "$d"
secs=()
for precision in f32 bf16; do
  out=$("$bin" run "$dir" "$k" "$precision")
  echo "$out"
  secs+=("$(echo "$out" | awk '/kalm_seconds/{print $2}')")
  mv "$dir/kalm_ids.npy" "$dir/kalm_ids_$precision.npy"
  mv "$dir/kalm_scores.npy" "$dir/kalm_scores_$precision.npy"
done
"$python" - "$dir" "$k" "${secs[0]}" "${secs[1]}" <<'PY'
import sys, time, numpy as np, faiss
d, k = sys.argv[1], int(sys.argv[2])
kalm_s = {"f32": float(sys.argv[3]), "bf16": float(sys.argv[4])}
xb = np.load(d + "/corpus.npy"); xq = np.load(d + "/queries.npy")
index = faiss.IndexFlatIP(xb.shape[1]); index.add(xb)
t0 = time.time(); D, I = index.search(xq, k); fs = time.time() - t0
print(f"faiss_seconds {fs:.3f}  faiss_threads {faiss.omp_get_max_threads()}  faiss {faiss.__version__}")
for p in ("f32", "bf16"):
    ki = np.load(f"{d}/kalm_ids_{p}.npy"); ks = np.load(f"{d}/kalm_scores_{p}.npy")
    same = (ki == I).all(axis=1)
    # Rows that differ must differ only by near-exact ties (float32 sums in another order).
    diff_rows = np.where(~same)[0]
    tie_ok = all(np.allclose(np.sort(ks[r]), np.sort(D[r]), atol=1e-5) for r in diff_rows)
    print(f"{p}: rows_identical {same.sum()}/{len(same)}  differing_rows_are_ties {tie_ok}  "
          f"max_score_diff {np.abs(ks - D).max():.2e}")
    print(f"{p}: ratio faiss_time/kalm_time = {fs / kalm_s[p]:.2f}")
PY
