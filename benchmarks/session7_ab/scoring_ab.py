"""A/B behind BENCHMARKS.md, issue 5 session 7, "merged adapter" row: first-token scoring of
256 fpb unlabeled items with an SFT adapter, run beside the base weights by PEFT
(`model.merge_adapters: false`) vs folded into a copy of them (the default), one backend each,
after a warm-up, alternating A B four times in one process; then each setting's largest
option-probability difference and argmax agreement against float32 without autocast
(unmerged), and the accuracy of its argmax against the gold answers (audit):
`python benchmarks/session7_ab/scoring_merged_adapter.py ADAPTER_DIR`.
"""

import dataclasses
import sys
import time

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

adapter = sys.argv[1]
cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:256]
prompts = [task.messages(e) for e in items]
choices = [task.choices(e) for e in items]
settings = {
    "unmerged (PEFT)": {"merge_adapters": False},
    "merged (default)": {},
}
backends = {}
for name, overrides in settings.items():
    b = HFBackend(dataclasses.replace(cfg.model, **overrides))
    b.load_adapter(adapter)
    b.score_choices(prompts[-16:], choices[-16:], progress=False)  # warm-up
    backends[name] = b
scores = {}
for rep in range(4):
    for name, b in backends.items():
        t0 = time.perf_counter()
        scores[name] = b.score_choices(prompts, choices, progress=False)
        s = time.perf_counter() - t0
        print(f"rep {rep} {name}: {len(items) / s:.1f} items/s ({s:.1f} s)", flush=True)
del backends
ref = HFBackend(dataclasses.replace(cfg.model, autocast="off", merge_adapters=False))
ref.load_adapter(adapter)
scores["float32, unmerged (reference)"] = ref.score_choices(prompts, choices, progress=False)
reference = scores["float32, unmerged (reference)"]


def argmax(p: list[float]) -> int:
    return max(range(len(p)), key=p.__getitem__)


gold = [task.choice_answers(e).index(e.audit_gold) for e in items]
for name, got in scores.items():
    pairs = list(zip(got, reference, strict=True))
    error = max(abs(x - y) for a, b in pairs for x, y in zip(a, b, strict=True))
    agree = sum(argmax(a) == argmax(b) for a, b in pairs) / len(pairs)
    acc = sum(argmax(a) == g for a, g in zip(got, gold, strict=True)) / len(gold)
    print(
        f"{name}: largest probability difference {error:.4f}, argmax agreement "
        f"{100 * agree:.1f} %, accuracy {100 * acc:.1f} %"
    )
