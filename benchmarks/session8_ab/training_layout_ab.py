"""A/B behind BENCHMARKS.md, issue 5 session 8: LoRA training with the answer instruction first
vs last in the user message (`task.instruction_position`), alternating in one process on one
backend: 1 epoch over 192 fpb labeled rows, default training config, a fresh adapter each time.
Prints seconds, tokens/s and the epoch's mean training loss.

    python benchmarks/session8_ab/training_layout_ab.py            # 2 pairs, prefix sharing on
    python benchmarks/session8_ab/training_layout_ab.py no-share   # 1 pair, model.share_prefix off
"""

import dataclasses
import sys
import tempfile
from pathlib import Path

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples

no_share = sys.argv[1:] == ["no-share"]
cfg = load_config("configs/fpb.yaml", {})
tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
b = HFBackend(dataclasses.replace(cfg.model, share_prefix=not no_share))
rows = {}
for position in ("first", "last"):
    task = build_task(dataclasses.replace(cfg.task, instruction_position=position))
    rows[position] = sft_examples(task, load_split(cfg.data, "labeled", task)[:192])
with tempfile.TemporaryDirectory() as d:  # warm-up
    b.train(rows["first"][:32], tc, Path(d) / "a", progress=False)
for rep in range(1 if no_share else 2):
    for position in ("first", "last"):
        with tempfile.TemporaryDirectory() as d:
            r = b.train(rows[position], tc, Path(d) / "a", progress=False)
        print(
            f"rep {rep} {position}: {r.seconds:.1f} s, {r.tokens / r.seconds:.0f} tok/s, "
            f"loss {r.history[-1]['loss']:.3f}",
            flush=True,
        )
