"""``semievol eval``: accuracy, per-class accuracy and confusion counts of Vanilla and adapters."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from semievol.backends import build_backend
from semievol.cli import resolve
from semievol.config import dump_config
from semievol.data import load_split
from semievol.evaluation import compare_models, format_comparison, format_per_class
from semievol.tasks import build_task


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    task = build_task(cfg.task)
    test = load_split(cfg.data, "test", task)
    for spec in cfg.eval.adapters:  # fail on a typo before the model loads
        if spec != "vanilla" and not Path(spec).is_dir():
            from semievol.errors import ConfigError

            raise ConfigError(
                f"eval.adapters: {spec!r} is neither 'vanilla' nor an adapter directory"
            )
    backend = build_backend(dataclasses.replace(cfg.model, adapter=None))
    models = {
        spec: (None if spec == "vanilla" else backend.load_adapter(spec))
        for spec in cfg.eval.adapters
    }
    results = compare_models(
        backend, task, test, models, cfg.eval.output_dir, max_new_tokens=cfg.eval.max_new_tokens
    )
    dump_config(cfg, Path(cfg.eval.output_dir) / "semievol_config.yaml")
    print(format_comparison(results))
    print()
    print(format_per_class(results))
    print(f"\nmetrics (with confusion counts): {Path(cfg.eval.output_dir) / 'metrics.json'}")
    return 0
