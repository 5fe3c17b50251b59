"""``semievol data check``: validate every configured split and print a summary."""

from __future__ import annotations

import argparse
import json

from semievol.cli import resolve
from semievol.data import find_overlap, load_splits, summarize
from semievol.errors import ConfigError
from semievol.tasks import build_task


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    task = build_task(cfg.task)
    splits = [s for s in ("labeled", "unlabeled", "test") if cfg.data.path_of(s)]
    if not splits:
        raise ConfigError("no data configured: set data.labeled, data.unlabeled and/or data.test")
    data = load_splits(cfg.data, task, splits)  # raises DataError listing every problem
    summary = {}
    for split, examples in data.items():
        summary[split] = {
            "file": cfg.data.path_of(split),
            **summarize(examples, task, audit=split == "unlabeled"),
        }
        if split == "unlabeled":
            summary[split]["gold_for_audit"] = summary[split].pop("with_answer")
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    names = list(data)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            overlap = find_overlap(data[a], data[b])
            if overlap:
                print(
                    f"warning: {overlap} {b} items also appear in {a} (same question and options: leakage)"
                )
    print("ok: " + ", ".join(f"{s} {len(data[s])} rows" for s in names))
    return 0
