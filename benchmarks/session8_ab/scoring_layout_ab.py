"""A/B behind BENCHMARKS.md, issue 5 session 8: first-token scoring of 256 fpb unlabeled items
with the base model, the answer instruction last vs first (`task.instruction_position`),
3 alternating pairs in one process; then one torch profile of each (operators by self CPU time).

    python benchmarks/session8_ab/scoring_layout_ab.py
"""

import dataclasses
import time

from torch.profiler import ProfilerActivity, profile

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

cfg = load_config("configs/fpb.yaml", {})
b = HFBackend(cfg.model)
setups = {}
for position in ("last", "first"):
    task = build_task(dataclasses.replace(cfg.task, instruction_position=position))
    items = load_split(cfg.data, "unlabeled", task)[:256]
    prompts = [task.messages(e) for e in items]
    seqs = [b.tokens(b.render(m)) for m in prompts]
    shared = b._shared_prefix_length(seqs, min(map(len, seqs)) - 1)
    print(f"{position}: {sum(map(len, seqs)) / len(seqs):.1f} tokens per prompt, {shared} shared")
    setups[position] = (prompts, [task.choices(e) for e in items])
b.score_choices(setups["last"][0][:16], setups["last"][1][:16], progress=False)  # warm-up
for rep in range(3):
    for position, (prompts, choices) in setups.items():
        t0 = time.perf_counter()
        b.score_choices(prompts, choices, progress=False)
        print(f"rep {rep} {position}: {time.perf_counter() - t0:.2f} s", flush=True)
for position, (prompts, choices) in setups.items():
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        b.score_choices(prompts, choices, progress=False)
    print(position)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
