"""A/B behind BENCHMARKS.md, issue 5 session 5, "output head rows" row: wall time of
first-token scoring of 256 fpb items with the head restricted to the candidate rows and with
the whole vocabulary, alternating twice, and the largest difference of the distributions
(ran at commit 0c14b83): `python benchmarks/session5_ab/head_rows_timing.py`.
"""

import time

import numpy as np

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

A = "runs/bench/suite/headline/SemiEvol/seed0/sft/train/adapter"

cfg = load_config("configs/fpb.yaml", {"model.batch_size": 8})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:256]
b = HFBackend(cfg.model)
b.load_adapter(A)
P = [task.messages(e) for e in items]
C = [task.choices(e) for e in items]
b.score_choices(P[-16:], C[-16:], progress=False)
res = {}
for _rep in range(2):
    for mode in (True, False):
        b._head_patched = mode
        t0 = time.perf_counter()
        r = b.score_choices(P, C, progress=False)
        dt = time.perf_counter() - t0
        print(f"rows={mode}: {dt:.2f}s {len(items) / dt:.1f} items/s", flush=True)
        res[mode] = r
print("max diff", np.abs(np.array(res[True]) - np.array(res[False])).max())
