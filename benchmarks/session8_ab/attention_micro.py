"""Micro-benchmark behind the session-8 note on issue 5: attention at fpb scoring shapes
(SmolLM2's 9 query / 3 KV heads, a 34-token shared prefix, left padding, bf16 inputs): torch
SDPA with repeat_kv, SDPA with enable_gqa, and grouped-query matmul + softmax in float32 and
in bf16; milliseconds per call and largest error against float32 SDPA.

    python benchmarks/session8_ab/attention_micro.py
"""

import time

import torch
import torch.nn.functional as F

H, G, D = 3, 3, 64  # KV heads, queries per KV head, head dim


def bench(f, reps=30):
    for _ in range(3):
        f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps * 1e3


def compare(B, Lq, P):
    Lk = Lq + P
    q = torch.randn(B, H * G, Lq, D).bfloat16()
    k = torch.randn(B, H, Lk, D).bfloat16()
    v = torch.randn(B, H, Lk, D).bfloat16()
    # left padding + causal, the prefix visible to every query
    lens = torch.randint(Lq // 2, Lq + 1, (B,))
    qpos = torch.arange(Lq)[None, :]
    kpos = torch.arange(Lk)[None, :]
    valid_k = (kpos < P) | (kpos - P >= (Lq - lens)[:, None])  # [B, Lk]
    causal = kpos[None] - P <= qpos[..., None]  # [1, Lq, Lk]
    mask = (valid_k[:, None, :] & causal)[:, None]  # [B, 1, Lq, Lk]

    def rep(x):
        return x[:, :, None].expand(B, H, G, Lk, D).reshape(B, H * G, Lk, D)

    def sdpa_repeat():
        return F.scaled_dot_product_attention(q, rep(k), rep(v), attn_mask=mask, scale=D**-0.5)

    def sdpa_gqa():
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=D**-0.5, enable_gqa=True
        )

    def grouped_fp32():
        qg = q.float().view(B, H, G * Lq, D)
        s = torch.matmul(qg, k.float().transpose(-1, -2)) * D**-0.5
        s = s.view(B, H, G, Lq, Lk).masked_fill(~mask[:, :, None], float("-inf"))
        p = torch.softmax(s, -1).view(B, H, G * Lq, Lk)
        return torch.matmul(p, v.float()).view(B, H * G, Lq, D).to(torch.bfloat16)

    def grouped_bf16():
        qg = q.view(B, H, G * Lq, D)
        s = torch.matmul(qg, k.transpose(-1, -2)).float() * D**-0.5
        s = s.view(B, H, G, Lq, Lk).masked_fill(~mask[:, :, None], float("-inf"))
        p = torch.softmax(s, -1).to(torch.bfloat16).view(B, H, G * Lq, Lk)
        return torch.matmul(p, v).view(B, H * G, Lq, D)

    ref = F.scaled_dot_product_attention(
        q.float(), rep(k).float(), rep(v).float(), attn_mask=mask, scale=D**-0.5
    )
    for name, f in [
        ("sdpa+repeat", sdpa_repeat),
        ("sdpa gqa", sdpa_gqa),
        ("fp32 grouped", grouped_fp32),
        ("bf16 grouped", grouped_bf16),
    ]:
        err = (f().float() - ref).abs().max().item()
        print(B, Lq, Lk, name, f"{bench(f):.2f} ms err {err:.4f}")


torch.manual_seed(0)
for batch, query_len, prefix in [(16, 61, 34), (8, 128, 34), (24, 45, 34)]:
    compare(batch, query_len, prefix)
