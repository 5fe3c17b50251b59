"""What LoRA adds to a frozen linear layer in training, and what fusing it could recover
(BENCHMARKS.md, issue 5 session 13):

    python benchmarks/session13_ab/lora_linear_micro.py

Forward + backward of one linear layer of SmolLM2-135M on 1,600 rows (an fpb training
batch's positions), float32, rank 16, p = 0.05, for the four projection shapes of a decoder
layer, arms alternating, median of 30:

- ``frozen``: the base matmul only (the input needs its gradient, the weight does not);
- ``peft``: PEFT's composition, ``base(x) + lora_B(lora_A(dropout(x))) * scaling``, with
  SparseDropout (what training runs);
- ``addmm``: the same, but the update is added into the base output by one in-place
  ``addmm_`` with the scaling as its alpha (no scaled copy, no separate sum);
- ``sparse-fused``: one autograd function for base + update that never builds the dropped-out
  input: it corrects the rank-r product at the dropped positions instead (index_add_ and a
  sampled matmul), and adds the update's input gradient into the base one in place.

The per-layer total counts each shape as often as a decoder layer has it (q, o: 576 -> 576;
k, v: 576 -> 192; gate, up: 576 -> 1536; down: 1536 -> 576).
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import torch

from semievol.backends.allocator import retain_freed_memory
from semievol.backends.lora_dropout import SparseDropout, drop_positions

ROWS, RANK, P, SCALING = 1600, 16, 0.05, 2.0
SHAPES = {(576, 576): 2, (576, 192): 2, (576, 1536): 2, (1536, 576): 1}


class SparseFusedLora(torch.autograd.Function):
    """x W^T + c (x A^T - the dropped positions' share) B^T, with c = scaling / (1 - p)."""

    @staticmethod
    def forward(ctx: Any, x, weight, a, b, positions, c):  # noqa: ANN001
        y = x @ weight.T
        h = x @ a.T
        if positions.numel():
            rows, cols = positions // x.shape[1], positions % x.shape[1]
            h.index_add_(0, rows, a.T[cols] * x.view(-1)[positions][:, None], alpha=-1.0)
        y.addmm_(h, b.T, alpha=c)
        ctx.save_for_backward(x, weight, a, b, h, positions)
        ctx.c = c
        return y

    @staticmethod
    def backward(ctx: Any, grad):  # noqa: ANN001
        x, weight, a, b, h, positions = ctx.saved_tensors
        c = ctx.c
        grad_b = (grad.T @ h).mul_(c)
        grad_h = grad @ b
        grad_x = (grad @ weight).addmm_(grad_h, a, alpha=c)
        grad_a = grad_h.T @ x
        if positions.numel():
            n, k = x.shape
            rows, cols = positions // k, positions % k
            crow = torch.searchsorted(rows, torch.arange(n + 1))
            with warnings.catch_warnings():  # beta-state warning of sparse CSR tensors
                warnings.simplefilter("ignore")
                pattern = torch.sparse_csr_tensor(
                    crow, cols, torch.zeros(len(rows), dtype=grad_h.dtype), (n, k)
                )
                dots = torch.sparse.sampled_addmm(pattern, grad_h, a).values()
            grad_x.view(-1).index_add_(0, positions, dots, alpha=-c)
            grad_a.index_add_(1, cols, (grad_h[rows] * x.view(-1)[positions][:, None]).T, alpha=-1)
        return grad_x, None, grad_a.mul_(c), grad_b, None, None


def check_sparse_fused() -> float:
    """Largest difference of SparseFusedLora's output and gradients from the dense
    computation with the same dropped positions (float64, small sizes)."""
    torch.manual_seed(0)
    x = torch.randn(50, 40, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 40, dtype=torch.float64)
    a = torch.randn(4, 40, dtype=torch.float64, requires_grad=True)
    b = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    positions = drop_positions(x.numel(), 0.3)
    keep = torch.ones(x.numel(), dtype=torch.float64).index_fill_(0, positions, 0).view_as(x)
    c = SCALING / 0.7
    fused = SparseFusedLora.apply(x, weight, a, b, positions, c)
    dense = x @ weight.T + ((x * keep) @ a.T @ b.T) * c
    grad = torch.randn_like(dense)
    pairs = zip(
        (fused, *torch.autograd.grad(fused, (x, a, b), grad)),
        (dense, *torch.autograd.grad(dense, (x, a, b), grad)),
        strict=True,
    )
    return max(float((u - v).detach().abs().max()) for u, v in pairs)


def median_ms(n_in: int, n_out: int) -> dict[str, float]:
    """Median milliseconds of each arm's forward + backward, arms alternating."""
    x = torch.randn(ROWS, n_in, requires_grad=True)
    weight = torch.randn(n_out, n_in) * 0.02
    a = (torch.randn(RANK, n_in) * 0.02).requires_grad_()
    b = (torch.randn(n_out, RANK) * 0.02).requires_grad_()
    grad = torch.randn(ROWS, n_out)
    dropout = SparseDropout(P).train()

    def frozen() -> None:
        (x @ weight.T).backward(grad)

    def peft() -> None:
        (x @ weight.T + (dropout(x) @ a.T @ b.T) * SCALING).backward(grad)

    def addmm() -> None:
        y = x @ weight.T
        y.addmm_(dropout(x) @ a.T, b.T, alpha=SCALING)
        y.backward(grad)

    def sparse_fused() -> None:
        positions = drop_positions(x.numel(), P)
        SparseFusedLora.apply(x, weight, a, b, positions, SCALING / (1 - P)).backward(grad)

    arms = {"frozen": frozen, "peft": peft, "addmm": addmm, "sparse-fused": sparse_fused}
    times: dict[str, list[float]] = {k: [] for k in arms}
    for fn in arms.values():
        fn()
    for _ in range(30):
        for name, fn in arms.items():
            x.grad = a.grad = b.grad = None
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main() -> None:
    error = check_sparse_fused()
    print(f"sparse-fused against the dense computation: largest difference {error:.1e}\n")
    assert error < 1e-9, "the sparse-fused arm does not compute LoRA"
    retain_freed_memory()  # as training runs
    torch.manual_seed(0)
    totals: dict[str, float] = {}
    print("| shape (in -> out) | frozen ms | peft ms | addmm ms | sparse-fused ms |")
    print("|---|---|---|---|---|")
    for (n_in, n_out), count in SHAPES.items():
        med = median_ms(n_in, n_out)
        for k, v in med.items():
            totals[k] = totals.get(k, 0.0) + count * v
        print(f"| {n_in} -> {n_out} | " + " | ".join(f"{v:.2f}" for v in med.values()) + " |")
    print(
        "| **one decoder layer's 7** | "
        + " | ".join(f"**{v:.1f}**" for v in totals.values())
        + " |"
    )
    base = totals["frozen"]
    print(
        "\nLoRA's share over the frozen layers: "
        + ", ".join(
            f"{k} +{(v / base - 1) * 100:.0f} %" for k, v in totals.items() if k != "frozen"
        )
    )


if __name__ == "__main__":
    main()
