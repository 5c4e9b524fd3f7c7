#!/usr/bin/env python3
"""transformers' eager CPU forward on the corpus kalm-bench-embed saved, for bench/embed.

    PYTHONPATH=/tmp/tf/v4.47.1/src .venv/bin/python bench/embed/transformers_peer.py DIR [BATCH]

DIR is kalm-bench-embed's --save-dir: config.json + model.safetensors (kalm's
save_model), corpus_ids.jsonl and kalm_f32_embeddings.f32. transformers is not
installable here; its source tree (a release that runs Qwen2 on Debian's torch
1.13, e.g. v4.47.1) goes on PYTHONPATH, with the stand-ins that
tests/fixtures/models/gen_fixtures.py installs for the packages it imports.
Prints tokens/s batched as sentence-transformers does (sorted by length,
BATCH texts per batch, default 32) and in input order, and the largest
difference between transformers' and kalm's normalised mean-pooled embeddings.
"""
import json, os, struct, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "fixtures", "models"))
import gen_fixtures  # noqa: E402  (stand-ins for huggingface_hub, safetensors, ...)

gen_fixtures._install_stubs()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import Qwen2Config, Qwen2Model  # noqa: E402


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        b, e = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4").copy()).reshape(info["shape"])
    return out


def main():
    d = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    torch.set_num_threads(os.cpu_count())
    cfg = json.load(open(os.path.join(d, "config.json")))
    keep = {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                "num_key_value_heads", "vocab_size", "rms_norm_eps", "rope_theta",
                                "max_position_embeddings", "tie_word_embeddings") if k in cfg}
    model = Qwen2Model(Qwen2Config(**keep, attn_implementation="eager")).eval()
    missing, unexpected = model.load_state_dict(read_safetensors(os.path.join(d, "model.safetensors")), strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    seqs = [json.loads(l)["input_ids"] for l in open(os.path.join(d, "corpus_ids.jsonl"))]
    tokens = sum(len(s) for s in seqs)
    kalm = np.fromfile(os.path.join(d, "kalm_f32_embeddings.f32"), dtype="<f4").reshape(len(seqs), -1)

    def run(order):
        out = [None] * len(seqs)
        t0 = time.time()
        with torch.no_grad():
            for b0 in range(0, len(order), batch):
                idx = order[b0:b0 + batch]
                L = max(len(seqs[i]) for i in idx)
                ids = torch.zeros((len(idx), L), dtype=torch.long)
                mask = torch.zeros((len(idx), L), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, :len(seqs[i])] = torch.tensor(seqs[i])
                    mask[r, :len(seqs[i])] = 1
                h = model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(h.dtype)
                pooled = (h * m).sum(1) / m.sum(1)
                for r, i in enumerate(idx):
                    out[i] = pooled[r].numpy()
        return time.time() - t0, np.stack(out)

    sorted_order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    secs_sorted, emb = run(sorted_order)
    print(f"transformers_eager_sorted tokens_per_s {tokens / secs_sorted:.1f}  ({secs_sorted:.1f} s, batch {batch})")
    secs_input, _ = run(list(range(len(seqs))))
    print(f"transformers_eager_input_order tokens_per_s {tokens / secs_input:.1f}  ({secs_input:.1f} s, batch {batch})")
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    k = kalm / np.linalg.norm(kalm, axis=1, keepdims=True)
    print(f"max_abs_diff_normalised_vs_kalm {np.abs(emb - k).max():.2e}")


if __name__ == "__main__":
    main()
