"""A/Bs behind BENCHMARKS.md, issue 5 session 7: first-token scoring of 256 fpb unlabeled
items with an SFT adapter under two model settings, one backend each, after a warm-up,
alternating A B in one process; then each setting's largest option-probability difference and
argmax agreement against float32 without autocast (adapter unmerged), and the accuracy of its
argmax against the gold answers (audit).

    python benchmarks/session7_ab/scoring_ab.py ADAPTER_DIR merged
        "merged adapter" row: PEFT's unmerged forward (`model.merge_adapters: false`) vs the
        adapter folded into a copy of the base weights (the default); 4 pairs
    python benchmarks/session7_ab/scoring_ab.py ADAPTER_DIR bf16-model
        "whole model in bf16" row: float32 weights under bf16 autocast (the default on this
        CPU) vs the whole model in bf16 without autocast (`model.dtype: bfloat16`,
        `model.autocast: off`: no float32 residual stream, no casts around each linear); 2 pairs
"""

import dataclasses
import sys
import time

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

COMPARISONS = {  # name: (settings A, settings B, alternating pairs)
    "merged": ({"unmerged (PEFT)": {"merge_adapters": False}, "merged (default)": {}}, 4),
    "bf16-model": (
        {
            "float32 weights, bf16 autocast (default)": {},
            "bf16 model, no autocast": {"dtype": "bfloat16", "autocast": "off"},
        },
        2,
    ),
}

adapter, comparison = sys.argv[1], sys.argv[2]
settings, pairs = COMPARISONS[comparison]
cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:256]
prompts = [task.messages(e) for e in items]
choices = [task.choices(e) for e in items]
backends = {}
for name, overrides in settings.items():
    b = HFBackend(dataclasses.replace(cfg.model, **overrides))
    b.load_adapter(adapter)
    b.score_choices(prompts[-16:], choices[-16:], progress=False)  # warm-up
    backends[name] = b
scores = {}
for rep in range(pairs):
    for name, b in backends.items():
        t0 = time.perf_counter()
        scores[name] = b.score_choices(prompts, choices, progress=False)
        s = time.perf_counter() - t0
        print(f"rep {rep} {name}: {len(items) / s:.1f} items/s ({s:.1f} s)", flush=True)
del backends
ref = HFBackend(dataclasses.replace(cfg.model, autocast="off", merge_adapters=False))
ref.load_adapter(adapter)
reference = ref.score_choices(prompts, choices, progress=False)
scores["float32, unmerged (reference)"] = reference


def argmax(p: list[float]) -> int:
    return max(range(len(p)), key=p.__getitem__)


gold = [task.choice_answers(e).index(e.audit_gold) for e in items]
for name, got in scores.items():
    rows = list(zip(got, reference, strict=True))
    error = max(abs(x - y) for a, b in rows for x, y in zip(a, b, strict=True))
    agree = sum(argmax(a) == argmax(b) for a, b in rows) / len(rows)
    acc = sum(argmax(a) == g for a, g in zip(got, gold, strict=True)) / len(gold)
    print(
        f"{name}: largest probability difference {error:.4f}, argmax agreement "
        f"{100 * agree:.1f} %, accuracy {100 * acc:.1f} %"
    )
