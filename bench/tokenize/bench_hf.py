"""The Hugging Face side of bench/tokenize: the same texts through HF tokenizers'
Python binding (PyPI), one encode_batch call per pass (one crossing into Rust; run
with RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false and taskset so that it uses
one core, like kalm-bench-tokenize). Prints the same line as kalm-bench-tokenize,
whose checksum (sum of all ids modulo 2^64) must come out equal.

    .venv/bin/python bench_hf.py TOKENIZER_JSON TEXTS.jsonl [PASSES] [--special]
"""
import json
import sys
import time

from tokenizers import Tokenizer


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit("usage: bench_hf.py TOKENIZER_JSON TEXTS.jsonl [PASSES] [--special]")
    tok_path, texts_path = args[0], args[1]
    passes = max(1, int(args[2])) if len(args) > 2 else 3
    special = len(args) > 3 and args[3] == "--special"

    t0 = time.perf_counter()
    tok = Tokenizer.from_file(tok_path)
    load = time.perf_counter() - t0
    with open(texts_path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f.read().split("\n") if line]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)

    best, tokens, checksum = float("inf"), 0, 0
    for _ in range(passes):
        s0 = time.perf_counter()
        encs = tok.encode_batch(texts, add_special_tokens=special)
        best = min(best, time.perf_counter() - s0)
        # Outside the timing: copying ids into Python lists is binding overhead, not tokenizing.
        ids = [e.ids for e in encs]
        tokens = sum(len(x) for x in ids)
        checksum = sum(sum(x) for x in ids) % 2**64  # kalm sums into a uint64_t
    print(f"hf: load {load:.2f} s, texts {len(texts)}, bytes {nbytes}, tokens {tokens}, checksum {checksum}, "
          f"best of {passes}: {best:.3f} s, {tokens / best:.0f} tokens/s, {nbytes / best / 1e6:.2f} MB/s")


if __name__ == "__main__":
    main()
