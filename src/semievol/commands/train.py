"""``semievol train``: LoRA SFT of the base model on the labeled data (in-weight propagation)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from semievol.backends import build_backend
from semievol.cli import resolve
from semievol.config import config_to_dict
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples, split_validation, validation_hook

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    task = build_task(cfg.task)
    labeled = load_split(cfg.data, "labeled", task)  # validate before loading the model
    train, val = split_validation(labeled, cfg.train.val_fraction, cfg.train.seed)
    log.info(
        "labeled: %d rows from %s (%d held out for validation)",
        len(labeled),
        cfg.data.labeled,
        len(val),
    )
    backend = build_backend(dataclasses.replace(cfg.model, adapter=None))
    result = backend.train(
        sft_examples(task, train),
        cfg.train,
        Path(cfg.train.output_dir),
        init_adapter=cfg.model.adapter,
        resolved_config=config_to_dict(cfg),
        epoch_end=validation_hook(backend, task, val),
    )
    for record in result.history:
        if "val_accuracy" in record:
            print(
                f"epoch {record['epoch']}: loss {record['loss']:.4f}, validation accuracy {record['val_accuracy'] * 100:.1f} % (n={record['val_n']})"
            )
    print(
        f"adapter saved to {result.adapter_dir} ({result.steps} steps, {result.epochs} epochs, "
        f"final loss {result.final_loss:.4f}, {result.tokens / max(result.seconds, 1e-9):.0f} tokens/s)"
    )
    return 0
