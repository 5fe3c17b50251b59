"""Micro-benchmark behind `semievol.backends.cpu_attention` (BENCHMARKS.md, issue 5 session 6,
"CPU attention" row): one attention call of SmolLM2's shape (9 query heads, 3 KV heads, head
size 64, bf16 under autocast, causal mask with 5 left-padding positions), transformers' SDPA
vs eager attention, forward + backward and forward only, at the batch shapes of training:
`python benchmarks/session6_ab/attention_micro.py`.
"""

import time

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import eager_attention_forward

torch.manual_seed(0)


def ms(f, n=5):
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1e3


class Attention(torch.nn.Module):
    num_key_value_groups = 3


module = Attention().train()
for rows, length in [(16, 96), (16, 128), (16, 192), (8, 256), (6, 384), (4, 512), (2, 1024)]:
    q = torch.randn(rows, 9, length, 64).bfloat16().requires_grad_()
    k = torch.randn(rows, 3, length, 64).bfloat16().requires_grad_()
    v = torch.randn(rows, 3, length, 64).bfloat16().requires_grad_()
    mask = torch.full((length, length), float("-inf")).triu(1)[None, None]
    mask = mask.expand(rows, 1, length, length).clone()
    mask[:, :, :, :5] = float("-inf")
    mask[:, :, :5, :5] = 0  # the padding positions see each other only
    for name, fn in [("sdpa", sdpa_attention_forward), ("eager", eager_attention_forward)]:
        with torch.autocast("cpu", dtype=torch.bfloat16):

            def forward_backward(fn=fn, q=q, k=k, v=v, mask=mask):
                out, _ = fn(module, q, k, v, mask, scaling=0.125, dropout=0.0)
                out.float().sum().backward()

            def forward(fn=fn, q=q, k=k, v=v, mask=mask):
                with torch.no_grad():
                    fn(module, q, k, v, mask, scaling=0.125, dropout=0.0)

            print(
                f"{rows} x {length} {name:5s}: forward + backward {ms(forward_backward):.1f} ms, "
                f"forward {ms(forward):.1f} ms",
                flush=True,
            )
