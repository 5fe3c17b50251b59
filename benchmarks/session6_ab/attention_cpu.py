"""A/B behind BENCHMARKS.md, issue 5 session 6, "CPU attention" rows: first-token scoring of
256 fpb unlabeled items and 1 training epoch over 96 labeled rows (default config, LoRA
dropout 0.05), with `model.attention: sdpa` (transformers' default before) and `auto`
(eager up to 384 keys), one backend each, after a warm-up, alternating A B A B in one
process: `python benchmarks/session6_ab/attention_cpu.py`.
"""

import dataclasses
import tempfile
import time
from pathlib import Path

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
ex = sft_examples(task, load_split(cfg.data, "labeled", task)[:96])
items = load_split(cfg.data, "unlabeled", task)[:256]
prompts = [task.messages(e) for e in items]
choices = [task.choices(e) for e in items]
tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
backends = {a: HFBackend(dataclasses.replace(cfg.model, attention=a)) for a in ("sdpa", "auto")}
for b in backends.values():  # warm-up
    b.score_choices(prompts[:32], choices[:32], progress=False)
    with tempfile.TemporaryDirectory() as d:
        b.train(ex[:16], tc, Path(d) / "a", progress=False)
scores = {}
for rep in range(2):
    for name, b in backends.items():
        b.use_adapter(None)  # score with the base model: the adapters trained here differ
        t0 = time.perf_counter()
        scores[name] = b.score_choices(prompts, choices, progress=False)
        score_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            r = b.train(ex, tc, Path(d) / "a", progress=False)
        print(
            f"rep {rep} attention={name:5s}: scoring {len(items) / score_s:.1f} items/s "
            f"({score_s:.1f} s), training {r.tokens / r.seconds:.0f} tok/s ({r.seconds:.1f} s), "
            f"final loss {r.final_loss:.4f}",
            flush=True,
        )
pairs = zip(*scores.values(), strict=True)
diff = max(abs(x - y) for a, b in pairs for x, y in zip(a, b, strict=True))
print(f"largest probability difference between the two: {diff:.2e}")
