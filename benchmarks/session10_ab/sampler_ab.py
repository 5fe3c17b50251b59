"""Micro-benchmark behind BENCHMARKS.md, issue 5 session 10: picking the next token of 48
sampled rows over SmolLM2's vocabulary (49,152), per-row ``torch.multinomial`` with a
generator per row (the code at 578074c) vs one uniform draw per row from CPU generators and
an inverse-CDF pick for all rows at once (``pick_tokens`` now). CPU; 5 alternating rounds of
200 steps each.

    python benchmarks/session10_ab/sampler_ab.py
"""

import time

import torch

from semievol.backends import Sampling
from semievol.backends.hf import pick_tokens

ROWS, VOCAB, STEPS = 48, 49152, 200
logits = torch.randn(ROWS, VOCAB) * 3
samplings = [Sampling(1.0, seed=r) for r in range(ROWS)]


def per_row_multinomial():
    streams = [torch.Generator().manual_seed(r) for r in range(ROWS)]
    for _ in range(STEPS):
        probs = torch.softmax(logits, dim=-1)
        for r in range(ROWS):
            torch.multinomial(probs[r], 1, generator=streams[r])


def inverse_cdf():
    streams = [torch.Generator().manual_seed(r) for r in range(ROWS)]
    for _ in range(STEPS):
        pick_tokens(logits, samplings, streams)


for rnd in range(5):
    for name, run in [("per-row multinomial", per_row_multinomial), ("inverse CDF", inverse_cdf)]:
        t = time.perf_counter()
        run()
        print(rnd, name, f"{(time.perf_counter() - t) / STEPS * 1e3:.2f} ms per step", flush=True)
