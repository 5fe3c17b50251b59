"""LoRA dropout that draws only the positions it drops.

PEFT applies ``nn.Dropout`` to the input of every LoRA layer: on SmolLM2-135M that is ~150 k
Bernoulli draws per token (7 adapted projections × 30 layers). Drawing a random number per
element and comparing it, then masking, cost 9-20 % of a float32 training step on CPU; this
way costs 0-9 % (4 % on average), and training ran 1.07-1.13x as fast (BENCHMARKS.md,
issue 5 session 12). With p = 0.05 only one element in 20 is dropped, so this module draws
the dropped positions themselves: the gaps between the successes of independent
Bernoulli(p) trials are independent Geometric(p) variables, so ``n p`` geometric draws (plus a
margin, topped up if short) and a cumulative sum give exactly the positions that elementwise
coin flips would drop, in distribution. The layer's input is scaled by 1 / (1 - p) in one
pass and the drawn positions are zeroed; the backward pass does the same to the gradient,
and only the positions (8 bytes per dropped element) are kept for it. Only the random stream
differs from ``nn.Dropout``'s, as a different seed would. The torch generator is used, so
``torch.manual_seed`` and checkpointed RNG state still make training reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def drop_positions(
    n: int, p: float, device: torch.device | None = None, *, first_draw: int | None = None
) -> torch.Tensor:
    """Sorted int64 positions in [0, n), each included independently with probability p.

    ``first_draw``: how many gaps to draw at first (default: the mean plus 6 standard
    deviations, so topping up is rare); tests set it small to exercise the top-up."""
    if n == 0 or p == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    parts: list[torch.Tensor] = []
    last = -1  # position of the last success drawn so far
    while last < n:
        mean = (n - 1 - last) * p  # successes expected in what is left
        count = first_draw or int(mean + 6 * math.sqrt(mean) + 16)
        first_draw = None
        # float64 draws: a gap can pass 2**24 when p is small and n large
        gaps = torch.empty(count, dtype=torch.float64, device=device).geometric_(p)
        positions = gaps.to(torch.int64).cumsum_(0).add_(last)
        parts.append(positions)
        last = int(positions[-1])
    positions = torch.cat(parts) if len(parts) > 1 else parts[0]
    return positions[: int(torch.searchsorted(positions, n))]


class _DropAndScale(torch.autograd.Function):
    """x scaled by 1 / (1 - p) and zeroed at ``positions`` (of its flattened elements, in
    logical order); saves only the positions."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(positions)
        ctx.scale = scale
        return _scale_and_zero(x, positions, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (positions,) = ctx.saved_tensors
        return _scale_and_zero(grad, positions, ctx.scale), None, None


def _scale_and_zero(x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
    out = x.contiguous().mul(scale)  # contiguous: positions index the logical order
    out.view(-1).index_fill_(0, positions, 0)
    return out


class SparseDropout(torch.nn.Module):
    """Drop-in for ``nn.Dropout(p)`` (identity in eval mode) that draws dropped positions.

    Under autocast the input is first cast to the autocast dtype, which the LoRA matmul right
    after would cast it to anyway: it is then scaled in half as many bytes. Off the CPU,
    torch's own dropout kernel is used: it is fast there, and drawing positions would make
    the host wait for the device at every layer.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        device = x.device.type
        if torch.is_autocast_enabled(device) and x.is_floating_point():
            x = x.to(torch.get_autocast_dtype(device))
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, training=True)
        positions = drop_positions(x.numel(), self.p, x.device)
        return _DropAndScale.apply(x, positions, 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_sparse_dropout(net: torch.nn.Module, adapter: str, *, autocast: bool = False) -> int:
    """Replace adapter ``adapter``'s ``nn.Dropout`` LoRA dropouts in ``net`` by
    :class:`SparseDropout` with the same p; returns how many were replaced.

    With ``autocast``, PEFT's cast of every LoRA input to the LoRA weights' float32 is turned
    off: autocast casts it back to bf16 for the matmul right after, so for inputs that already
    are bf16 (o_proj's and down_proj's) the round trip changes no value and only costs time.
    """
    replaced = 0
    for module in net.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict) and adapter in dropouts:
            if autocast and hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
            old = dropouts[adapter]
            if isinstance(old, torch.nn.Dropout) and old.p > 0:
                dropouts[adapter] = SparseDropout(old.p)
                replaced += 1
    return replaced
