"""``semievol demo``: the whole SemiEvol pipeline on a sample task, offline, on the bundled model.

Setup → generate the sample data (support-ticket routing: few labeled tickets, many unlabeled) →
``semievol run`` on it → print the comparison. Re-running continues from the finished stages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semievol.cli import resolve
from semievol.demo_data import DATA_COLUMNS, TASK, write_demo_data
from semievol.report import accuracy_table

# Few labeled tickets so that the unlabeled ones have something to add. With 24 labeled tickets
# (9 optimizer steps) SmolLM2-135M collapsed to one team; 40 tickets × 6 epochs give 60 steps.
DEMO_SIZES = {"labeled": 40, "unlabeled": 300, "test": 200}


def run(args: argparse.Namespace) -> int:
    from semievol.pipeline import run_pipeline

    out = Path(args.out)
    paths = write_demo_data(out / "data", **DEMO_SIZES)
    base = {
        "data": {k: str(v) for k, v in paths.items()} | DATA_COLUMNS,
        "task": TASK,
        "train": {"epochs": 6, "learning_rate": 1e-3, "batch_size": 4, "val_fraction": 0.0},
        "pipeline": {"run_dir": str(out), "evolve_epochs": 2},
    }
    cfg = resolve(args, base=base)
    print(
        f"demo task: support-ticket routing (4 teams), {DEMO_SIZES['labeled']} labeled, "
        f"{DEMO_SIZES['unlabeled']} unlabeled, {DEMO_SIZES['test']} test tickets ({out / 'data'})"
    )
    result = run_pipeline(cfg, force=args.force)
    print()
    print(accuracy_table(result.metrics))
    for rnd in result.rounds:
        audit = rnd.select.get("audit", {})
        kept = audit.get("kept", {})
        line = f"pseudo-labels: kept {rnd.select['kept']} of {rnd.select['items']}"
        if kept.get("n"):
            line += f", {kept['accuracy'] * 100:.1f} % of them correct (audit)"
        print(line)
    print(f"\nreport: {result.report}")
    return 0
