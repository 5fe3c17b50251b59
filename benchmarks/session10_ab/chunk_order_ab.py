"""A/B behind BENCHMARKS.md, issue 5 session 10: first-token scoring of 256 fpb unlabeled items
with an SFT adapter in the committee's 64-item chunks, taken in file order (the committee before
the change) or shortest first (``shortest_first``, now), and in one call; 3 alternating rounds
in one process after a warm-up.

    python benchmarks/session10_ab/chunk_order_ab.py ADAPTER_DIR
"""

import sys
import time

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.evaluation import shortest_first
from semievol.tasks import build_task

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:256]
b = HFBackend(cfg.model)
b.load_adapter(sys.argv[1])
b.score_choices([task.messages(e) for e in items[:16]], [task.choices(e) for e in items[:16]])


def in_chunks(examples):
    def run():
        for s in range(0, len(examples), 64):
            chunk = examples[s : s + 64]
            b.score_choices(
                [task.messages(e) for e in chunk], [task.choices(e) for e in chunk], progress=False
            )

    return run


arms = {
    "64-item chunks, file order": in_chunks(items),
    "64-item chunks, shortest first": in_chunks(shortest_first(b, items, task.messages)),
    "one call": lambda: b.score_choices(
        [task.messages(e) for e in items], [task.choices(e) for e in items], progress=False
    ),
}
for rep in range(3):
    for name, run in arms.items():
        t = time.perf_counter()
        run()
        print(rep, name, f"{time.perf_counter() - t:.2f} s", flush=True)
