"""A/B behind BENCHMARKS.md, issue 5 session 6, "shared prefix with dropout" row: 1 epoch over
128 fpb labeled rows at the default LoRA dropout 0.05 with `model.share_prefix` false and
true (one backend each), after a warm-up, alternating A B A B in one process:
`python benchmarks/session6_ab/training_prefix_dropout.py`.
"""

import dataclasses
import tempfile
from pathlib import Path

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.resources import peak_rss_mb, reset_peak_rss
from semievol.tasks import build_task
from semievol.training import sft_examples

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
ex = sft_examples(task, load_split(cfg.data, "labeled", task)[:128])
tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
backends = {s: HFBackend(dataclasses.replace(cfg.model, share_prefix=s)) for s in (False, True)}
for b in backends.values():  # warm-up
    with tempfile.TemporaryDirectory() as d:
        b.train(ex[:32], tc, Path(d) / "a", progress=False)
for rep in range(2):
    for share, b in backends.items():
        with tempfile.TemporaryDirectory() as d:
            reset_peak_rss()
            r = b.train(ex, tc, Path(d) / "a", progress=False)
        print(
            f"rep {rep} share_prefix={share!s:5}: {r.tokens / r.seconds:.0f} tok/s "
            f"({r.seconds:.1f} s), final loss {r.final_loss:.4f}, peak RSS {peak_rss_mb()} MiB",
            flush=True,
        )
