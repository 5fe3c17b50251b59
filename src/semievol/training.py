"""In-weight propagation: LoRA supervised fine-tuning on labeled examples.

The config lives here; the training loop itself belongs to each backend (``Backend.train``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from semievol.backends import TrainExample
from semievol.data import Example
from semievol.tasks import Task

if TYPE_CHECKING:
    from semievol.backends import Backend


@dataclass
class TrainConfig:
    output_dir: str = "runs/sft"
    """Where the adapter (PEFT format, safetensors) and its resolved config are written."""
    epochs: int = 6
    """Passes over the training data (with a validation split, the best epoch is kept). 6 and
    learning_rate 1e-3 were chosen on an fpb validation split (BENCHMARKS.md): with 4 epochs
    the model did not learn the minority class."""
    learning_rate: float = 1e-3
    """Peak learning rate of AdamW (after warmup, then cosine decay to 0)."""
    batch_size: int = 16
    """Examples per micro-batch (micro-batches group examples of similar length)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size × grad_accum)."""
    warmup_ratio: float = 0.1
    """Fraction of optimizer steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables clipping)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input. 0 skips the dropout masks (~15 % of a CPU training step) and
    did as well on fpb validation over 3 seeds, but on the 40-example demo task it lost 7
    points (SFT) and 20 (SemiEvol); 0.05 stays the default until a few-label validation says
    otherwise (BENCHMARKS.md)."""
    target_modules: str = "all-linear"
    """Modules that get LoRA: 'all-linear' or a comma-separated list like 'q_proj,v_proj'."""
    max_length: int = 1024
    """Longest training sequence in tokens; longer prompts are cut from the left."""
    seed: int = 0
    """Seed of LoRA initialisation, data order and dropout: same seed, same adapter."""
    val_fraction: float = 0.2
    """Fraction of the labeled data held out (stratified by answer) to measure accuracy after
    every epoch and keep the best one; 0 trains on all of it. SFT, evolve and every baseline
    use the same split, so their epochs are chosen the same way."""
    keep_best_epoch: bool = True
    """With a validation split, save the epoch with the best validation accuracy (the earliest
    on ties) instead of the last one."""
    checkpoint_every: int = 20
    """Optimizer steps between training checkpoints (LoRA weights, optimizer, scheduler and RNG
    state, in ``<output_dir>.checkpoint``; also at every epoch end). A killed run resumes from
    the last one and ends with the same adapter as an uninterrupted run. 0: epoch ends only."""

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "lora_r", "lora_alpha", "max_length")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (0 < self.learning_rate < 1):
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not (0 <= self.warmup_ratio < 1):
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not (0 <= self.lora_dropout < 1):
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("weight_decay and max_grad_norm must be >= 0")
        if not (0 <= self.val_fraction < 1):
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.target_modules.strip():
            raise ValueError("target_modules must be 'all-linear' or a list of module names")

    def lora_targets(self) -> str | list[str]:
        if self.target_modules.strip() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]


RESULT_NEUTRAL_FIELDS = ("checkpoint_every",)
"""TrainConfig fields that cannot change the trained adapter (left out of stage keys)."""


def result_key(config: TrainConfig) -> dict[str, object]:
    """The fields of ``config`` that determine the adapter: the key material of a training stage."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in RESULT_NEUTRAL_FIELDS}


def sft_examples(task: Task, examples: Sequence[Example]) -> list[TrainExample]:
    """Training pairs for labeled examples: the task's prompt and its answer reply."""
    out = []
    for ex in examples:
        if ex.answer is None:
            raise ValueError(f"example {ex.id!r} has no answer; cannot train on it")
        out.append(TrainExample(task.messages(ex), task.target(ex, ex.answer)))
    return out


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng_seed: int, window: int = 50
) -> list[list[int]]:
    """Shuffled batches of indices with similar lengths (less padding, still random order).

    Indices are shuffled, cut into windows of ``window`` batches, sorted by length within each
    window, split into batches, and the batch order is shuffled again.
    """
    import random

    rng = random.Random(rng_seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def split_validation(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, validation): ``fraction`` of each answer's examples, at least one per answer
    that has two or more, chosen reproducibly from ``seed``."""
    import random

    if fraction <= 0:
        return list(examples), []
    rng = random.Random(f"validation:{seed}")
    by_answer: dict[str | None, list[int]] = {}
    for i, ex in enumerate(examples):
        by_answer.setdefault(ex.answer, []).append(i)
    held: set[int] = set()
    for indices in by_answer.values():
        if len(indices) < 2:
            continue
        k = max(1, round(fraction * len(indices)))
        held.update(rng.sample(indices, k))
    train = [ex for i, ex in enumerate(examples) if i not in held]
    val = [ex for i, ex in enumerate(examples) if i in held]
    return train, val


def validation_hook(
    backend: Backend, task: Task, val: Sequence[Example]
) -> Callable[[int], dict[str, float]] | None:
    """An ``epoch_end`` callback that scores the adapter being trained on ``val``."""
    if not val:
        return None
    from semievol.evaluation import evaluate

    def epoch_end(epoch: int) -> dict[str, float]:
        metrics, _ = evaluate(backend, task, val, desc=f"validation (epoch {epoch})")
        return {"val_accuracy": metrics["accuracy"], "val_n": metrics["n"]}

    return epoch_end
