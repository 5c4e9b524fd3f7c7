#!/usr/bin/env python3
"""transformers' CPU forward on the corpus kalm-bench-embed saved, for bench/embed.

    .venv/bin/python bench/embed/transformers_peer.py DIR [BATCH] [THREADS]

DIR is kalm-bench-embed's --save-dir: config.json + model.safetensors (kalm's
save_model), corpus_ids.jsonl and kalm_f32_embeddings.f32. transformers is the
one scripts/setup.sh installs from PyPI into .venv (scripts/python-requirements.txt),
run with its default attention (SDPA) as sentence-transformers would.
Prints tokens/s batched as sentence-transformers does (sorted by length, BATCH
texts per batch, default 32) and in input order, in f32, and sorted in bf16
(weights cast, as torch_dtype=bfloat16 loads them), and the largest difference
between transformers' and kalm's normalised mean-pooled f32 embeddings.
"""
import json, os, sys, time

import numpy as np
import torch
from transformers import Qwen2Model


def main():
    d = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else os.cpu_count()
    torch.set_num_threads(threads)
    model = Qwen2Model.from_pretrained(d, dtype=torch.float32).eval()
    seqs = [json.loads(l)["input_ids"] for l in open(os.path.join(d, "corpus_ids.jsonl"))]
    tokens = sum(len(s) for s in seqs)
    kalm = np.fromfile(os.path.join(d, "kalm_f32_embeddings.f32"), dtype="<f4").reshape(len(seqs), -1)

    def run(order):
        out = [None] * len(seqs)
        t0 = time.time()
        with torch.inference_mode():
            for b0 in range(0, len(order), batch):
                idx = order[b0:b0 + batch]
                L = max(len(seqs[i]) for i in idx)
                ids = torch.zeros((len(idx), L), dtype=torch.long)
                mask = torch.zeros((len(idx), L), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, :len(seqs[i])] = torch.tensor(seqs[i])
                    mask[r, :len(seqs[i])] = 1
                h = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                m = mask.unsqueeze(-1).to(h.dtype)
                pooled = (h * m).sum(1) / m.sum(1)
                for r, i in enumerate(idx):
                    out[i] = pooled[r].numpy()
        return time.time() - t0, np.stack(out)

    print(f"transformers {__import__('transformers').__version__} torch {torch.__version__} "
          f"attention {model.config._attn_implementation} threads {torch.get_num_threads()}")
    sorted_order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    secs_sorted, emb = run(sorted_order)
    print(f"transformers_f32_sorted tokens_per_s {tokens / secs_sorted:.1f}  ({secs_sorted:.1f} s, batch {batch})")
    secs_input, _ = run(list(range(len(seqs))))
    print(f"transformers_f32_input_order tokens_per_s {tokens / secs_input:.1f}  ({secs_input:.1f} s, batch {batch})")
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    k = kalm / np.linalg.norm(kalm, axis=1, keepdims=True)
    print(f"max_abs_diff_normalised_vs_kalm {np.abs(emb - k).max():.2e}")
    model.to(torch.bfloat16)
    secs_bf16, _ = run(sorted_order)
    print(f"transformers_bf16_sorted tokens_per_s {tokens / secs_bf16:.1f}  ({secs_bf16:.1f} s, batch {batch})")


if __name__ == "__main__":
    main()
