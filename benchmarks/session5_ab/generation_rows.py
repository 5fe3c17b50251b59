"""A/B behind BENCHMARKS.md, issue 5 session 5, "generation batches under auto" row:
sampled generation of 64 fpb prompts (up to 1,024 new tokens) at 5 and 16 rows per batch,
twice each, in one process (ran at commit 1c6fa1c):
`python benchmarks/session5_ab/generation_rows.py`.
"""

import time

from semievol.backends import Sampling
from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

A = "runs/bench/suite/headline/SemiEvol/seed0/sft/train/adapter"

cfg = load_config("configs/fpb.yaml", {"model.batch_size": 16})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:64]
b = HFBackend(cfg.model)
b.load_adapter(A)
P = [task.messages(e) for e in items]
b.generate(P[:8], samplings=[Sampling(1.0, seed=1)], max_new_tokens=1024, progress=False)
for _rep in range(2):
    for bs in (5, 16):
        b.config.batch_size = bs
        t0 = time.perf_counter()
        g = b.generate(P, samplings=[Sampling(1.0, seed=1)], max_new_tokens=1024, progress=False)
        dt = time.perf_counter() - t0
        tokens = sum(len(x[0].token_ids) for x in g)
        print(f"rows {bs}: {dt:.2f} s for 64 prompts, {tokens} tokens", flush=True)
