"""A/B behind BENCHMARKS.md, issue 5 session 5, "bf16 storage" row (training): 1 epoch over
128 fpb labeled rows with and without the bf16 storage of frozen weights, LoRA dropout 0.05
and 0 (ran at commit 0c14b83, before training shared the prompt prefix):
`python benchmarks/session5_ab/training_bf16_weights.py`.
"""

import dataclasses
import tempfile
import time
from pathlib import Path

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.resources import peak_rss_mb, reset_peak_rss
from semievol.tasks import build_task
from semievol.training import sft_examples

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
lab = load_split(cfg.data, "labeled", task)[:128]
ex = sft_examples(task, lab)
for store in (True, False):
    if not store:
        HFBackend._store_frozen_linears_in_bf16 = lambda self: None
    b = HFBackend(cfg.model)
    for drop in (0.05, 0.0):
        tc = dataclasses.replace(
            cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0, lora_dropout=drop
        )
        with tempfile.TemporaryDirectory() as d:
            reset_peak_rss()
            t0 = time.perf_counter()
            r = b.train(ex, tc, Path(d) / "a", progress=False)
            dt = time.perf_counter() - t0
        print(
            f"store_bf16={store} dropout={drop}: {r.tokens / dt:.0f} tok/s ({dt:.1f}s) "
            f"peak RSS {peak_rss_mb()} MiB",
            flush=True,
        )
