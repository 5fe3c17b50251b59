"""Shared set-up of the session-13 training A/Bs: the default fpb training config on the
bundled model, a fresh LoRA adapter with SparseDropout, and fpb labeled rows cut into
length-sorted batches of the default size. Arms run in one process, alternating, and time
forward + backward of every batch (no optimizer step, so every arm sees the same weights)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def training_step_setup(rows: int) -> tuple[Any, Any, list[list[tuple[list[int], int]]], int]:
    """(backend, PEFT model in train mode, batches, tokens in them)."""
    import semievol.backends.hf as hf
    from semievol.backends.lora_dropout import use_sparse_dropout
    from semievol.config import load_config
    from semievol.data import load_split
    from semievol.tasks import build_task
    from semievol.training import sft_examples

    cfg = load_config("configs/fpb.yaml", {})
    task = build_task(cfg.task)
    examples = sft_examples(task, load_split(cfg.data, "labeled", task)[:rows])
    backend = hf.HFBackend(cfg.model)
    name = backend._add_fresh_adapter(cfg.train)
    net = backend.peft
    backend._train_only(name)
    use_sparse_dropout(net, name, autocast=backend.autocast)
    encoded = sorted(
        (backend._encode_train(ex, cfg.train.max_length) for ex in examples),
        key=lambda item: len(item[0]),
    )
    net.train()
    size = cfg.train.batch_size
    batches = [encoded[i : i + size] for i in range(0, len(encoded), size)]
    return backend, net, batches, sum(len(seq) for seq, _ in encoded)


def epoch_seconds(backend: Any, net: Any, batches: list) -> tuple[float, float]:
    """(seconds, summed loss) of forward + backward over ``batches``; the dropout draws are
    seeded per batch so that arms compute the same losses."""
    t0 = time.perf_counter()
    total = 0.0
    for batch in batches:
        torch.manual_seed(0)
        loss = backend._batch_loss(net, batch, share_prefix=backend.config.share_prefix)
        loss.backward()
        total += loss.item()
    return time.perf_counter() - t0, total


def alternate_arms(
    backend: Any,
    net: Any,
    batches: list,
    tokens: int,
    arms: tuple[str, ...],
    use: Callable[[str], None],
    rounds: int,
) -> dict[str, list[float]]:
    """Tokens/s of each arm per round, after a warm-up epoch as the model stands; ``use(arm)``
    puts an arm in place. Arms run in order on even rounds and in reverse on odd ones, so
    neither side always runs first; the first arm is put back at the end."""
    epoch_seconds(backend, net, batches)  # warm-up
    rates: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            use(arm)
            seconds, loss = epoch_seconds(backend, net, batches)
            rates[arm].append(tokens / seconds)
            print(f"round {r} {arm}: {tokens / seconds:.1f} tok/s (summed loss {loss:.5f})")
    use(arms[0])
    return rates
