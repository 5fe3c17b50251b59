"""A/B behind BENCHMARKS.md, issue 5 session 5, "bf16 storage" row (scoring): first-token
scoring of 256 fpb items at batch 8 and 16, then the same after casting the frozen linear
weights to bf16 by hand. Ran at commit 9e1b0ed, before the backend did that cast itself:
`git checkout 9e1b0ed && python benchmarks/session5_ab/scoring_bf16_weights.py`.
"""

import time

import numpy as np
import torch

from semievol.backends import Sampling
from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

A = "runs/bench/suite/headline/SemiEvol/seed0/sft/train/adapter"


def timed(label, work, n):
    t0 = time.perf_counter()
    result = work()
    dt = time.perf_counter() - t0
    print(f"{label}: {dt:.2f}s {n / dt:.1f} items/s", flush=True)
    return result


cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:256]
b = HFBackend(cfg.model)
b.load_adapter(A)
P = [task.messages(e) for e in items]
C = [task.choices(e) for e in items]
b.score_choices(P[-16:], C[-16:], progress=False)
for bs in (8, 16):
    b.config.batch_size = bs
    r1 = timed(f"score bs{bs}", lambda: b.score_choices(P, C, progress=False), len(items))
b.config.batch_size = 16
timed(
    "generate 1 tok bs16",
    lambda: b.generate(P, samplings=[Sampling(1.0, seed=1)], max_new_tokens=1, progress=False),
    len(items),
)
timed(
    "generate 4 tok bs16",
    lambda: b.generate(P, samplings=[Sampling(1.0, seed=1)], max_new_tokens=4, progress=False),
    len(items),
)
# pre-cast body linear weights to bf16
n = 0
for name, m in b.model.named_modules():
    if (
        isinstance(m, torch.nn.Linear)
        and m is not b.model.get_output_embeddings()
        and m.weight.dtype == torch.float32
        and "lora" not in name
    ):
        m.weight.data = m.weight.data.to(torch.bfloat16)
        n += 1
print("cast", n)
for bs in (8, 16):
    b.config.batch_size = bs
    r2 = timed(f"score bf16w bs{bs}", lambda: b.score_choices(P, C, progress=False), len(items))
print("max diff", np.abs(np.array(r1) - np.array(r2)).max())
