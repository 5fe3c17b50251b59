"""A/B behind BENCHMARKS.md, issue 5 session 6, "contiguous head input" row: 1 epoch over 128
fpb labeled rows (default config) with the float32 output head fed the strided slice of kept
positions (before) and a contiguous copy (after), after a warm-up run, alternating A B A B in
one process: `python benchmarks/session6_ab/training_head_contiguous.py`.
"""

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
ex = sft_examples(task, load_split(cfg.data, "labeled", task)[:128])
tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
b = HFBackend(cfg.model)
head = b.model.get_output_embeddings()
contiguous_forward = head.forward


def strided_forward(x: torch.Tensor) -> torch.Tensor:  # the head before this change
    with torch.autocast("cpu", enabled=False):
        return torch.nn.functional.linear(x.float(), head.weight.float(), None)


with tempfile.TemporaryDirectory() as d:  # warm-up
    b.train(ex[:32], tc, Path(d) / "a", progress=False)
for rep in range(2):
    for contiguous in (False, True):
        head.forward = contiguous_forward if contiguous else strided_forward
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            r = b.train(ex, tc, Path(d) / "a", progress=False)
            dt = time.perf_counter() - t0
        print(
            f"rep {rep} {'contiguous' if contiguous else 'strided   '}: "
            f"{r.tokens / dt:.0f} tok/s ({dt:.1f} s), final loss {r.final_loss:.4f}",
            flush=True,
        )
