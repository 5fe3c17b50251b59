"""In-weight propagation: LoRA SFT of the base model on the labeled data.

The same training step, on labeled ∪ pseudo-labeled data, is the evolve stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semievol.data import Example
from semievol.tasks import Task
from semievol.training import TrainConfig, sft_examples, validation_hook

if TYPE_CHECKING:
    from semievol.backends import Backend, TrainResult


def train_adapter(
    backend: Backend,
    task: Task,
    train: Sequence[Example],
    validation: Sequence[Example],
    config: TrainConfig,
    adapter_dir: Path,
    *,
    init_adapter: Path | None = None,
    resolved_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``train`` (answers as targets), scored on ``validation`` after
    every epoch when it is not empty, and save it to ``adapter_dir``."""
    return backend.train(
        sft_examples(task, train),
        config,
        adapter_dir,
        init_adapter=init_adapter,
        resolved_config=resolved_config,
        epoch_end=validation_hook(backend, task, validation),
    )


def training_summary(result: TrainResult) -> dict[str, Any]:
    """What the manifest and the report keep of a training run."""
    return {
        "steps": result.steps,
        "epochs": result.epochs,
        "final_loss": result.final_loss,
        "tokens": result.tokens,
        "train_seconds": round(result.seconds, 2),
        "history": result.history,
    }
