"""A/B behind BENCHMARKS.md, issue 5 session 6, "LoRA dropout mask" row: 1 epoch over 128 fpb
labeled rows at LoRA dropout 0.05 with PEFT's nn.Dropout and with BitsDropout, after a
warm-up run (the first training in a process is slow), alternating A B A B in one process: `python benchmarks/session6_ab/training_dropout_mask.py`.
"""

import dataclasses
import tempfile
import time
from pathlib import Path

import semievol.backends.hf as hf
from semievol.backends.hf import HFBackend
from semievol.backends.lora_dropout import use_bits_dropout
from semievol.config import load_config
from semievol.data import load_split
from semievol.resources import peak_rss_mb, reset_peak_rss
from semievol.tasks import build_task
from semievol.training import sft_examples

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
ex = sft_examples(task, load_split(cfg.data, "labeled", task)[:128])
tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
b = HFBackend(cfg.model)
with tempfile.TemporaryDirectory() as d:  # warm-up
    b.train(ex[:32], tc, Path(d) / "a", progress=False)
for rep in range(2):
    for bits in (False, True):
        hf.use_bits_dropout = use_bits_dropout if bits else (lambda net, name: 0)
        with tempfile.TemporaryDirectory() as d:
            reset_peak_rss()
            t0 = time.perf_counter()
            r = b.train(ex, tc, Path(d) / "a", progress=False)
            dt = time.perf_counter() - t0
        print(
            f"rep {rep} {'BitsDropout' if bits else 'nn.Dropout '}: {r.tokens / dt:.0f} tok/s "
            f"({dt:.1f} s), final loss {r.final_loss:.4f}, peak RSS {peak_rss_mb()} MiB",
            flush=True,
        )
