"""The attention kernels kalm's model can use, side by side on this CPU: the eager
composite kalm used before (GQA heads stacked, additive mask, f32 softmax) against
at::scaled_dot_product_attention with is_causal and with a key-padding mask, at
the 0.5B shape's heads (14 query, 2 KV, head_dim 64). Same LibTorch as kalm's
build (pip's torch in .venv); one thread, so another job on the machine matters
less. Run: .venv/bin/python bench/embed/attention_kernels.py [THREADS [BxL ...]]
(default 1 thread, shapes 32x32 8x128 2x512; e.g. `2 128x8 64x16 32x32 16x64 8x128 4x256`
for where bf16's crossover lies).
"""
import sys, torch, time
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.manual_seed(0)
shapes = [tuple(int(v) for v in a.split("x")) for a in sys.argv[2:]] or [(32, 32), (8, 128), (2, 512)]
def eager(q,k,v,mask,scale,rep):
    B,H,L,D=q.shape; K=k.shape[1]
    qq=q.reshape(B,K,rep*L,D)
    s=torch.matmul(qq,k.transpose(-1,-2))*scale
    s=s.view(B,K,rep,L,L)+mask.view(B,1,1,L,L)
    p=torch.softmax(s,-1,dtype=torch.float).to(q.dtype).view(B,K,rep*L,L)
    return torch.matmul(p,v).view(B,H,L,D)
def bench(f,n=5):
    f(); t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n
for dt in (torch.float32, torch.bfloat16):
  for B,L in shapes:
    H,K,D=14,2,64; rep=H//K
    q=torch.randn(B,H,L,D,dtype=dt); k=torch.randn(B,K,L,D,dtype=dt); v=torch.randn(B,K,L,D,dtype=dt)
    causal=torch.ones(L,L,dtype=torch.bool).tril()
    add=torch.zeros(B,1,L,L,dtype=dt).masked_fill(~causal, torch.finfo(dt).min)
    te=bench(lambda: eager(q,k,v,add,0.125,rep))
    ts=bench(lambda: torch.nn.functional.scaled_dot_product_attention(q,k,v,is_causal=True,scale=0.125,enable_gqa=True))
    kp=torch.ones(B,1,1,L,dtype=torch.bool); kp[:, :, :, L-L//4:]=False
    tk=bench(lambda: torch.nn.functional.scaled_dot_product_attention(q,k,v,attn_mask=kp,scale=0.125,enable_gqa=True))
    print(f"{dt} B={B} L={L}: eager {te*1e3:.2f} ms, sdpa causal {ts*1e3:.2f} ms ({te/ts:.2f}x), sdpa keymask {tk*1e3:.2f} ms ({te/tk:.2f}x)")

# Training: forward + backward at bench/train's attention shape (4 query heads,
# 2 KV heads, head_dim 64, 160 texts of 64 tokens, no padding), f32.
B, L, H, K, D = 160, 64, 4, 2, 64
def fwd_bwd(f):
    q = torch.randn(B, H, L, D, requires_grad=True)
    k = torch.randn(B, K, L, D, requires_grad=True)
    v = torch.randn(B, K, L, D, requires_grad=True)
    def run():
        f(q, k, v).sum().backward()
    return bench(run, 3)
causal = torch.ones(L, L, dtype=torch.bool).tril()
add = torch.zeros(B, 1, L, L).masked_fill(~causal, torch.finfo(torch.float32).min)
te = fwd_bwd(lambda q, k, v: eager(q, k, v, add, 0.125, H // K))
ts = fwd_bwd(lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.125, enable_gqa=True))
print(f"train f32 B={B} L={L} fwd+bwd: eager {te*1e3:.1f} ms, sdpa causal {ts*1e3:.1f} ms ({te/ts:.2f}x)")
