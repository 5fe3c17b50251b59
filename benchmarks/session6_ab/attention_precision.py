"""Option probabilities of 64 fpb unlabeled items (base model) under bf16 autocast with SDPA,
`auto` and eager attention, and at 1 row per batch, each against float32 without autocast
(BENCHMARKS.md, issue 5 session 6, "CPU attention" row):
`python benchmarks/session6_ab/attention_precision.py`.
"""

import dataclasses

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:64]
prompts = [task.messages(e) for e in items]
choices = [task.choices(e) for e in items]
settings = {
    "float32, sdpa (reference)": {"attention": "sdpa", "autocast": "off"},
    "bf16 autocast, sdpa": {"attention": "sdpa"},
    "bf16 autocast, auto": {"attention": "auto"},
    "bf16 autocast, eager": {"attention": "eager"},
    "bf16 autocast, sdpa, 1 row per batch": {"attention": "sdpa", "batch_size": 1},
}
scores = {}
for name, overrides in settings.items():
    backend = HFBackend(dataclasses.replace(cfg.model, **overrides))
    scores[name] = backend.score_choices(prompts, choices, progress=False)
    del backend
reference = scores["float32, sdpa (reference)"]
for name, got in scores.items():
    pairs = zip(got, reference, strict=True)
    error = max(abs(x - y) for a, b in pairs for x, y in zip(a, b, strict=True))
    print(f"{name}: largest probability difference to the reference {error:.4f}")
