"""Evolve: fine-tune on labeled ∪ selected pseudo-labels, from the base model with a fresh
adapter or continuing the SFT adapter."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semievol.data import Example
from semievol.stages.in_weight import train_adapter, training_summary
from semievol.tasks import Task
from semievol.training import TrainConfig

if TYPE_CHECKING:
    from semievol.backends import Backend


def pseudo_labeled(items: Sequence[Example], answers: dict[str, str]) -> list[Example]:
    """Unlabeled items that carry a kept pseudo-label, as training examples (gold never used)."""
    return [
        Example(ex.id, ex.question, ex.options, answers[ex.id]) for ex in items if ex.id in answers
    ]


def evolve_train_config(
    config: TrainConfig, epochs: int | None, learning_rate: float | None, seed_offset: int
) -> TrainConfig:
    return dataclasses.replace(
        config,
        epochs=epochs or config.epochs,
        learning_rate=learning_rate or config.learning_rate,
        seed=config.seed + seed_offset,
    )


def evolve(
    backend: Backend,
    task: Task,
    labeled: Sequence[Example],
    pseudo: Sequence[Example],
    validation: Sequence[Example],
    config: TrainConfig,
    adapter_dir: Path,
    *,
    init_adapter: Path | None,
    resolved_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    result = train_adapter(
        backend,
        task,
        [*labeled, *pseudo],
        validation,
        config,
        adapter_dir,
        init_adapter=init_adapter,
        resolved_config=resolved_config,
    )
    return {
        "adapter_name": result.adapter_name,
        "labeled": len(labeled),
        "pseudo_labeled": len(pseudo),
        **training_summary(result),
    }
