#!/usr/bin/env python3
"""kalm-embed against sentence-transformers on the same texts, model and device, in one run.

    .venv/bin/python bench/embed/st_peer.py --kalm-embed build/tools/kalm-embed \
        --tokenizer-dir .oracle/tokenizers/qwen3 [--layers 24] [--device cpu|cuda] \
        [--dtype f32|bf16] [--threads N] [--st-batch 32] [--short 4000] [--long 300]

Builds a random Qwen2-0.5B-shaped model (896 hidden, 14 heads, 2 KV heads, FFN
4864, vocab 151936; --layers of them) with transformers, saved as a
sentence-transformers directory (Transformer + mean Pooling + Normalize) with
the real Qwen3 tokenizer (same vocabulary size), and two corpora of word salad
from /usr/share/common-licenses: short texts (3-15 words) and long ones
(150-350 words). For each corpus, sentence-transformers' encode() (length-
sorted batches of --st-batch texts, its own method) and kalm-embed (its
summary line's tokens/s, which leaves out loading as the encode() timing
does) run on the same device in the same dtype; printed: tokens/s of each,
the ratio, and the smallest cosine between their embeddings. All from PyPI
(scripts/python-requirements.txt); the GPU check runs it with --device cuda.
"""
import argparse, json, os, random, re, shutil, subprocess, sys, tempfile, time

import numpy as np
import torch


def corpus(words, n, lo, hi, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kalm-embed", required=True)
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--st-batch", type=int, default=32)
    ap.add_argument("--short", type=int, default=4000)
    ap.add_argument("--long", type=int, default=300)
    ap.add_argument("--kalm-profile", default="",
                    help="after each timed kalm-embed run, an untimed one with --profile into this directory "
                         "(batches 3-6: a Chrome trace of where the time goes)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import Qwen2Config, Qwen2Model
    from sentence_transformers import SentenceTransformer, models
    import sentence_transformers, transformers

    work = tempfile.mkdtemp(prefix="kalm-st-peer.")
    try:
        base = os.path.join(work, "base")
        torch.manual_seed(0)
        cfg = Qwen2Config(hidden_size=896, num_hidden_layers=a.layers, num_attention_heads=14, num_key_value_heads=2,
                          intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                          tie_word_embeddings=True, is_causal=True)
        Qwen2Model(cfg).save_pretrained(base)
        shutil.copy(os.path.join(a.tokenizer_dir, "tokenizer.json"), base)
        # Without its chat template: with one, sentence-transformers 6 renders every
        # text through it (a "message" modality), which kalm refuses rather than
        # embedding something else.
        tok_cfg = json.load(open(os.path.join(a.tokenizer_dir, "tokenizer_config.json")))
        tok_cfg.pop("chat_template", None)
        json.dump(tok_cfg, open(os.path.join(base, "tokenizer_config.json"), "w"))
        tr = models.Transformer(base, max_seq_length=512)
        st_dir = os.path.join(work, "st")
        SentenceTransformer(modules=[tr, models.Pooling(896, "mean"), models.Normalize()]).save(st_dir)
        st = SentenceTransformer(st_dir, device=a.device)
        if a.dtype == "bf16":
            st = st.to(torch.bfloat16)
        words = sorted(set(re.findall(r"[A-Za-z]{3,}", " ".join(
            open(os.path.join("/usr/share/common-licenses", f), errors="ignore").read()
            for f in sorted(os.listdir("/usr/share/common-licenses"))
            if os.path.isfile(os.path.join("/usr/share/common-licenses", f))))))
        print(f"sentence-transformers {sentence_transformers.__version__} transformers {transformers.__version__} "
              f"torch {torch.__version__} device {a.device} dtype {a.dtype} threads {a.threads} layers {a.layers}")
        for name, texts in (("short", corpus(words, a.short, 3, 15, 1)), ("long", corpus(words, a.long, 150, 350, 2))):
            tokens = sum(len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=512)["input_ids"])
            st.encode(texts[:a.st_batch], batch_size=a.st_batch)  # warm-up
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.time()
            st_emb = st.encode(texts, batch_size=a.st_batch, convert_to_numpy=True)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            st_s = time.time() - t0
            path = os.path.join(work, f"{name}.jsonl")
            with open(path, "w") as f:
                for i, t in enumerate(texts):
                    f.write(json.dumps({"id": str(i), "text": t}) + "\n")
            out = os.path.join(work, f"{name}.npy")
            run = subprocess.run([a.kalm_embed, "-m", st_dir, "--device", a.device, "--dtype", a.dtype,
                                  "--threads", str(a.threads), path, "-o", out],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"kalm-embed failed: {run.stderr}")
            m = re.search(r"(\d+) tokens \(.*?: ([\d.]+)([kM]?) texts/s, ([\d.]+)([kM]?) tokens/s", run.stderr)
            if not m:
                sys.exit(f"no summary line in kalm-embed's stderr: {run.stderr}")
            scale = {"": 1, "k": 1e3, "M": 1e6}
            kalm_tps = float(m.group(4)) * scale[m.group(5)]
            kalm_tokens = int(m.group(1))
            if a.kalm_profile:
                trace = os.path.join(a.kalm_profile, f"trace-embed-{a.dtype}-{name}.json")
                prof = subprocess.run([a.kalm_embed, "-m", st_dir, "--device", a.device, "--dtype", a.dtype,
                                       "--threads", str(a.threads), path, "-o", os.path.join(work, "profiled.npy"),
                                       "--profile", trace, "--profile-batches", "3:6"],
                                      capture_output=True, text=True)
                summary = prof.stderr.strip().splitlines()[-1:] if prof.stderr.strip() else ["(no output)"]
                print(f"{name}: profile run exit {prof.returncode}: {summary[0]}")
            kalm_emb = np.load(out)
            cos = (kalm_emb * st_emb).sum(1) / (np.linalg.norm(kalm_emb, axis=1) * np.linalg.norm(st_emb, axis=1))
            print(f"{name}: {len(texts)} texts, {tokens} tokens (kalm counted {kalm_tokens}), "
                  f"avg {tokens / len(texts):.1f} tokens/text")
            print(f"{name}: sentence-transformers tokens_per_s {tokens / st_s:.1f}  ({st_s:.1f} s, batch {a.st_batch})")
            print(f"{name}: kalm-embed tokens_per_s {kalm_tps:.1f}")
            print(f"{name}: ratio kalm/sentence-transformers {kalm_tps / (tokens / st_s):.2f}  min cosine {cos.min():.6f}")
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
