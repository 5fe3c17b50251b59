"""A/B behind BENCHMARKS.md, issue 5 session 9: whole-reply scoring with the candidates' pass
computing logits at every reply position (as before this change) vs only at the
positions that predict a reply token, alternating in one process: the demo's 300 unlabeled
tickets with the SFT adapter of a `make demo` run, 3 pairs; prints seconds and the largest
probability difference between the arms.

    python benchmarks/session9_ab/whole_reply_head_ab.py [RUN_DIR]
"""

import sys
import time

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

run = sys.argv[1] if len(sys.argv) > 1 else "runs/demo"
cfg = load_config(f"{run}/semievol_config.yaml", {})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)
prompts, choices = [task.messages(e) for e in items], [task.choices(e) for e in items]
b = HFBackend(cfg.model)
b.load_adapter(f"{run}/sft/train/adapter")
net = b._net()
forward = type(net).forward
ALL = [False]


def every_position(self, *args, **kwargs):  # the old second pass: all positions' logits
    keep = kwargs.get("logits_to_keep")
    if ALL[0] and not isinstance(keep, int) and keep is not None:
        kwargs["logits_to_keep"] = 0
        out = forward(self, *args, **kwargs)
        out.logits = out.logits[:, keep]
        return out
    return forward(self, *args, **kwargs)


type(net).forward = every_position
b.score_choices(prompts[:8], choices[:8], full_sequence=True, progress=False)  # warm-up
for rep in range(3):
    out = {}
    for every in (True, False):
        ALL[0] = every
        t0 = time.perf_counter()
        out[every] = b.score_choices(prompts, choices, full_sequence=True, progress=False)
        print(f"rep {rep} logits at every position={every}: {time.perf_counter() - t0:.2f} s")
    diff = max(
        abs(x - y)
        for a, c in zip(out[True], out[False], strict=True)
        for x, y in zip(a, c, strict=True)
    )
    print(f"rep {rep}: max |p_every - p_kept| {diff:.1e}", flush=True)
