"""``semievol demo``: the sample ticket-routing task, Vanilla vs SFT on the bundled model, offline.

Setup → generate data → evaluate Vanilla → train SFT → evaluate SFT → report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from semievol.backends import build_backend
from semievol.cli import resolve
from semievol.config import config_to_dict, dump_config
from semievol.data import load_splits
from semievol.demo_data import DATA_COLUMNS, TASK, write_demo_data
from semievol.evaluation import compare_models, format_comparison, format_per_class
from semievol.io import atomic_write_text
from semievol.tasks import build_task
from semievol.training import sft_examples


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    paths = write_demo_data(out / "data")
    base = {
        "data": {k: str(v) for k, v in paths.items()} | DATA_COLUMNS,
        "task": TASK,
        "train": {
            "output_dir": str(out / "sft"),
            "epochs": 3,
            "learning_rate": 1e-3,
            "batch_size": 8,
        },
        "eval": {"output_dir": str(out / "eval")},
    }
    cfg = resolve(args, base=base)
    dump_config(cfg, out / "semievol_config.yaml")
    task = build_task(cfg.task)
    data = load_splits(cfg.data, task, ["labeled", "test"])
    print(
        f"demo task: support-ticket routing, {len(data['labeled'])} labeled, {len(data['test'])} test rows ({out / 'data'})"
    )

    t0 = time.perf_counter()
    backend = build_backend(cfg.model)
    vanilla = compare_models(
        backend, task, data["test"], {"Vanilla": None}, out / "eval" / "vanilla"
    )
    trained = backend.train(
        sft_examples(task, data["labeled"]),
        cfg.train,
        cfg.train.output_dir,
        resolved_config=config_to_dict(cfg),
    )
    sft = compare_models(
        backend, task, data["test"], {"SFT": trained.adapter_name}, out / "eval" / "sft"
    )
    results = vanilla | sft

    table = format_comparison(results)
    report = (
        "# semievol demo: Vanilla vs SFT\n\n"
        f"Model: {cfg.model.name or 'SmolLM2-135M-Instruct (bundled)'}; task: support-ticket routing "
        f"(4 teams), {len(data['labeled'])} labeled / {len(data['test'])} test rows; "
        f"SFT {cfg.train.epochs} epochs, lr {cfg.train.learning_rate}; total {time.perf_counter() - t0:.0f} s.\n\n"
        f"{table}\n\n{format_per_class(results)}\n"
    )
    atomic_write_text(out / "report.md", report)
    print()
    print(table)
    print(f"\nreport: {out / 'report.md'}; adapter: {trained.adapter_dir}")
    return 0
