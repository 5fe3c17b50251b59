"""``semievol train``: LoRA SFT of the base model on the labeled data (in-weight propagation)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from semievol.backends import build_backend
from semievol.cli import resolve
from semievol.config import config_to_dict
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    task = build_task(cfg.task)
    labeled = load_split(cfg.data, "labeled", task)  # validate before loading the model
    log.info("labeled: %d rows from %s", len(labeled), cfg.data.labeled)
    backend = build_backend(cfg.model)
    result = backend.train(
        sft_examples(task, labeled),
        cfg.train,
        Path(cfg.train.output_dir),
        init_adapter=cfg.model.adapter,
        resolved_config=config_to_dict(cfg),
    )
    print(
        f"adapter saved to {result.adapter_dir} ({result.steps} steps, {result.epochs} epochs, "
        f"final loss {result.final_loss:.4f}, {result.tokens / max(result.seconds, 1e-9):.0f} tokens/s)"
    )
    return 0
