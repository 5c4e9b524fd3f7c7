#!/usr/bin/env bash
# bench/search: kalm exact top-k vs faiss IndexFlatIP (faiss-cpu from PyPI, in the
# project's Python: KALM_PYTHON, default .venv/bin/python) on the same vectors, in
# the same run. Prints both times, the ratio, and id agreement.
#   bench/search/run.sh BUILD_DIR [N Q D K]
set -euo pipefail
build=${1:-build}; n=${2:-100000}; q=${3:-10000}; d=${4:-896}; k=${5:-10}
src=$(cd "$(dirname "$0")/../.." && pwd)
python=${KALM_PYTHON:-$src/.venv/bin/python}
bin=$build/bench/search/kalm-bench-search
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
"$bin" gen "$dir" "$n" "$q" "$d"
kalm=$("$bin" run "$dir" "$k")
echo "$kalm"
"$python" - "$dir" "$k" "$(echo "$kalm" | awk '/kalm_seconds/{print $2}')" <<'PY'
import sys, time, numpy as np, faiss
d, k, kalm_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
xb = np.load(d + "/corpus.npy"); xq = np.load(d + "/queries.npy")
index = faiss.IndexFlatIP(xb.shape[1]); index.add(xb)
t0 = time.time(); D, I = index.search(xq, k); fs = time.time() - t0
ki = np.load(d + "/kalm_ids.npy"); ks = np.load(d + "/kalm_scores.npy")
same = (ki == I).all(axis=1)
# Rows that differ must differ only by near-exact ties (float32 sums in another order).
diff_rows = np.where(~same)[0]
tie_ok = all(np.allclose(np.sort(ks[r]), np.sort(D[r]), atol=1e-5) for r in diff_rows)
print(f"faiss_seconds {fs:.3f}  faiss_threads {faiss.omp_get_max_threads()}")
print(f"rows_identical {same.sum()}/{len(same)}  differing_rows_are_ties {tie_ok}")
print(f"ratio faiss_time/kalm_time = {fs / kalm_s:.2f}  (>= 1.0: kalm at least as fast)")
PY
