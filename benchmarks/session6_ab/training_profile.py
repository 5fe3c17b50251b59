"""torch profile of LoRA training (default config): 1 epoch over 64 fpb labeled rows after a
warm-up, operators by self CPU time (BENCHMARKS.md, issue 5 session 6):
`python benchmarks/session6_ab/training_profile.py`.
"""

import dataclasses
import tempfile
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
ex = sft_examples(task, load_split(cfg.data, "labeled", task)[:64])
tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
b = HFBackend(cfg.model)
with tempfile.TemporaryDirectory() as d:  # warm-up
    b.train(ex[:16], tc, Path(d) / "a", progress=False)
with profile(activities=[ProfilerActivity.CPU]) as prof, tempfile.TemporaryDirectory() as d:
    r = b.train(ex, tc, Path(d) / "a", progress=False)
print(f"{r.tokens / r.seconds:.0f} tok/s under the profiler")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22))
