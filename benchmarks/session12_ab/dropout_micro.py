"""LoRA dropout alone, forward and backward, on one input the size of an fpb training batch's
q/k/v input (16 x 94 x 576, float32), p = 0.05 (BENCHMARKS.md, issue 5 session 12):

    python benchmarks/session12_ab/dropout_micro.py

``mask``: the dropout before session 12 (a random 16-bit draw and a comparison per element,
a masked fill and a scaling; kept here as the "before" arm); ``positions``: SparseDropout's
drawn positions, one scaling pass and a fill at the positions. Best of 5 runs of 50 calls.
"""

from __future__ import annotations

import time

import torch

from semievol.backends.lora_dropout import drop_positions

P = 0.05
SCALE = 1.0 / (1.0 - P)


def mask_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64)
    words.random_(-(1 << 63), None)
    drop = words.view(torch.int16)[:n].view(x.shape) < -(1 << 15) + round(P * (1 << 16))
    return x.masked_fill(drop, 0).mul_(SCALE), drop


def positions_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    positions = drop_positions(x.numel(), P)
    out = x.mul(SCALE)
    out.view(-1).index_fill_(0, positions, 0)
    return out, positions


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
        return grad.masked_fill(drop, 0).mul_(SCALE)

    def positions_backward() -> torch.Tensor:
        out = grad.mul(SCALE)
        out.view(-1).index_fill_(0, positions, 0)
        return out

    print("| dropout | forward ms | backward ms | dropped fraction |")
    print("|---|---|---|---|")
    for name, fwd, bwd, dropped in (
        ("mask", lambda: mask_forward(x), mask_backward, drop.double().mean().item()),
        ("positions", lambda: positions_forward(x), positions_backward, len(positions) / x.numel()),
    ):
        print(f"| {name} | {best_ms(fwd):.3f} | {best_ms(bwd):.3f} | {dropped:.4f} |")


if __name__ == "__main__":
    main()
