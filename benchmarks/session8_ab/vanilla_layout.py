"""A/B behind BENCHMARKS.md, issue 5 session 8: Vanilla (base model, no adapter) first-token
accuracy on the labeled splits of fpb, arc and mmlu with the answer instruction last vs first
(`task.instruction_position`), and the seconds each scoring took. The labeled split serves as
validation here: Vanilla never trains on it; the test split is not read.

    python benchmarks/session8_ab/vanilla_layout.py
"""

import dataclasses
import time

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

backend = None
for name in ["fpb", "arc", "mmlu"]:
    cfg = load_config(f"configs/{name}.yaml", {})
    if backend is None:
        backend = HFBackend(cfg.model)
    for pos in ["last", "first"]:
        task = build_task(dataclasses.replace(cfg.task, instruction_position=pos))
        items = load_split(cfg.data, "labeled", task)
        t = time.perf_counter()
        sc = backend.score_choices(
            [task.messages(e) for e in items], [task.choices(e) for e in items], progress=False
        )
        acc = sum(
            max(range(len(p)), key=p.__getitem__) == task.choice_answers(e).index(e.answer)
            for p, e in zip(sc, items, strict=True)
        ) / len(items)
        print(
            name,
            len(items),
            pos,
            f"acc {100 * acc:.1f}",
            f"{time.perf_counter() - t:.1f}s",
            flush=True,
        )
