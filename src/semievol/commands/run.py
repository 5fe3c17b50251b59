"""``semievol run``: the whole SemiEvol pipeline into one run directory (resumable)."""

from __future__ import annotations

import argparse

from semievol.cli import resolve
from semievol.errors import ConfigError
from semievol.report import accuracy_table


def run(args: argparse.Namespace) -> int:
    from semievol.pipeline import run_pipeline

    cfg = resolve(args)
    for split in ("labeled", "unlabeled"):
        if not cfg.data.path_of(split):  # type: ignore[arg-type]
            raise ConfigError(f"semievol run needs data.{split}")
    result = run_pipeline(cfg, force=args.force)
    if result.skipped:
        print(f"up to date, reused: {', '.join(result.skipped)}")
    if result.metrics:
        print()
        print(accuracy_table(result.metrics))
    for rnd in result.rounds:
        s = rnd.select
        line = f"round {rnd.number}: kept {s['kept']} of {s['items']} pseudo-labels"
        if "audit" in s:
            a = s["audit"]
            line += (
                f" (audit: kept {a['kept']['accuracy'] * 100:.1f} % correct"
                if a["kept"]["n"]
                else " (audit: none kept"
            ) + f", all {a['all']['accuracy'] * 100:.1f} %)"
        print(line)
    print(f"\nreport: {result.report}")
    return 0
