"""LoRA dropout alone, forward and backward, on one input the size of an fpb training batch's
q/k/v input (16 x 94 x 576, float32), p = 0.05 (BENCHMARKS.md, issue 5 session 12):

    python benchmarks/session12_ab/dropout_micro.py

``mask``: the dropout before session 12 (a random 16-bit draw and a comparison per element,
a masked fill and a scaling; ``mask_dropout.py``); ``positions``: SparseDropout's drawn
positions, one scaling pass and a fill at the positions (its own functions). Best of 5 runs of 50 calls.
"""

from __future__ import annotations

import time

import torch
from mask_dropout import drop_mask, mask_and_scale

from semievol.backends.lora_dropout import _scale_and_zero, drop_positions

P = 0.05
SCALE = 1.0 / (1.0 - P)


def mask_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    drop = drop_mask(x.shape, P)
    return mask_and_scale(x, drop, SCALE), drop


def positions_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    positions = drop_positions(x.numel(), P)
    return _scale_and_zero(x, positions, SCALE), positions


def best_ms(fn, calls: int = 50, repeats: int = 5) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls * 1e3)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 94, 576)
    grad = torch.randn_like(x)
    _, drop = mask_forward(x)
    _, positions = positions_forward(x)

    def mask_backward() -> torch.Tensor:
        return mask_and_scale(grad, drop, SCALE)

    def positions_backward() -> torch.Tensor:
        return _scale_and_zero(grad, positions, SCALE)

    print("| dropout | forward ms | backward ms | dropped fraction |")
    print("|---|---|---|---|")
    for name, fwd, bwd, dropped in (
        ("mask", lambda: mask_forward(x), mask_backward, drop.double().mean().item()),
        ("positions", lambda: positions_forward(x), positions_backward, len(positions) / x.numel()),
    ):
        print(f"| {name} | {best_ms(fwd):.3f} | {best_ms(bwd):.3f} | {dropped:.4f} |")


if __name__ == "__main__":
    main()
