"""A/B behind BENCHMARKS.md, issue 5 session 5, "output head rows" row: torch profiles of
first-token scoring of 64 fpb items with the head restricted to the candidate rows and with
the whole vocabulary (ran at commit 0c14b83):
`python benchmarks/session5_ab/head_rows_profile.py`.
"""

from torch.profiler import ProfilerActivity, profile

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

A = "runs/bench/suite/headline/SemiEvol/seed0/sft/train/adapter"

cfg = load_config("configs/fpb.yaml", {"model.batch_size": 8})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:64]
b = HFBackend(cfg.model)
b.load_adapter(A)
P = [task.messages(e) for e in items]
C = [task.choices(e) for e in items]
b.score_choices(P[-16:], C[-16:], progress=False)
for mode in (True, False):
    b._head_patched = mode
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        b.score_choices(P, C, progress=False)
    print(mode, prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
