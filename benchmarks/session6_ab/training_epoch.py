"""Training throughput of whatever code is imported: 1 epoch over 128 fpb labeled rows (default
config) after a warm-up, twice. For A/Bs across commits, run it alternately from two
checkouts, e.g. (BENCHMARKS.md, issue 5 session 6, "LoRA inputs in bf16" row):

    git worktree add /tmp/before <commit>
    for i in 1 2; do
        PYTHONPATH=/tmp/before/src python benchmarks/session6_ab/training_epoch.py before
        python benchmarks/session6_ab/training_epoch.py after
    done
"""

import dataclasses
import sys
import tempfile
from pathlib import Path

import semievol
from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples

label = sys.argv[1] if len(sys.argv) > 1 else "this checkout"
cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
ex = sft_examples(task, load_split(cfg.data, "labeled", task)[:128])
tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
b = HFBackend(cfg.model)
with tempfile.TemporaryDirectory() as d:  # warm-up
    b.train(ex[:32], tc, Path(d) / "a", progress=False)
for rep in range(2):
    with tempfile.TemporaryDirectory() as d:
        r = b.train(ex, tc, Path(d) / "a", progress=False)
    print(
        f"{label} ({Path(semievol.__file__).parent}) rep {rep}: {r.tokens / r.seconds:.0f} tok/s "
        f"({r.seconds:.1f} s), final loss {r.final_loss:.4f}",
        flush=True,
    )
