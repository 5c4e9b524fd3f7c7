#!/usr/bin/env python3
"""kalm-embed on a device against the committed sentence-transformers outputs of tests/fixtures/models_v5.

    bench/gpu/embed_parity.py KALM_EMBED FIXTURES_DIR TMP_DIR [DEVICE]

For every fixture model and variant in expected.safetensors (made on the CPU by
gen_fixtures.py with sentence-transformers), embeds texts.jsonl with
`kalm-embed --device DEVICE` (default cuda) in float32 and prints the largest
element-wise error relative to each embedding's norm; exits non-zero when the
worst exceeds 1e-5. scripts/gpu-check.sh runs it (and, with --cpu, on the CPU).
"""
import subprocess
import sys

import numpy as np
import safetensors.numpy


def main():
    exe, fixtures, tmp = sys.argv[1:4]
    device = sys.argv[4] if len(sys.argv) > 4 else "cuda"
    want = safetensors.numpy.load_file(fixtures + "/expected.safetensors")
    worst = 0.0
    for key in sorted(want):
        name, variant = key.split(".")
        args = [exe, "-q", "-m", f"{fixtures}/{name}", "--no-normalize", "--device", device,
                f"{fixtures}/texts.jsonl", "-o", f"{tmp}/{key}.npy"]
        if variant == "query":
            args += ["--prompt", "query"]
        subprocess.run(args, check=True)
        got = np.load(f"{tmp}/{key}.npy")
        err = float((np.abs(got - want[key]).max(axis=1) / np.linalg.norm(want[key], axis=1)).max())
        worst = max(worst, err)
        print(f"{key}: relative error {err:.3g}")
    print(f"embed parity on {device}: worst relative error {worst:.3g} (limit 1e-5)")
    sys.exit(0 if worst <= 1e-5 else 1)


if __name__ == "__main__":
    main()
