"""LoRA dropout with a cheaper random mask.

PEFT applies ``nn.Dropout`` to the input of every LoRA layer: on SmolLM2-135M that is ~150 k
Bernoulli draws per token (7 adapted projections × 30 layers), and torch's CPU Bernoulli costs
5–10 ns per element, a quarter of a training step. This module draws the same distribution
from raw random bits instead: 64 random bits give four 16-bit uniforms, each compared with a
threshold, ~2 ns per element. Every element is still dropped independently with probability
``p`` (rounded to a multiple of 1/65536) and the kept ones are scaled by 1/(1 - p); only the
random stream differs from ``nn.Dropout``'s, as a different seed would. The torch generator
is used, so ``torch.manual_seed`` and checkpointed RNG state still make training reproducible.
"""

from __future__ import annotations

from typing import Any

import torch

_LEVELS = 1 << 16


def drop_mask(shape: torch.Size, p: float, device: torch.device | None = None) -> torch.Tensor:
    """Boolean mask, each element True (dropped) with probability round(p * 65536) / 65536."""
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None)  # every bit uniform
    uniform16 = words.view(torch.int16)[:n].view(shape)
    return uniform16 < -(1 << 15) + round(p * _LEVELS)


class _DropAndScale(torch.autograd.Function):
    """x zeroed where ``drop`` and scaled by 1 / (1 - p); saves only the boolean mask.

    masked_fill + in-place mul: multiplying a float tensor by a bool one promotes the mask to
    float first, 5-15x slower here."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return x.masked_fill(drop, 0).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (drop,) = ctx.saved_tensors
        return grad.masked_fill(drop, 0).mul_(ctx.scale), None, None


class BitsDropout(torch.nn.Module):
    """Drop-in for ``nn.Dropout(p)`` (identity in eval mode) with the cheaper mask.

    Under autocast the input is first cast to the autocast dtype, which the LoRA matmul right
    after would cast it to anyway: the mask is then applied to half as many bytes.
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
        drop = drop_mask(x.shape, self.p, x.device)
        return _DropAndScale.apply(x, drop, 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_bits_dropout(net: torch.nn.Module, adapter: str, *, autocast: bool = False) -> int:
    """Replace adapter ``adapter``'s ``nn.Dropout`` LoRA dropouts in ``net`` by
    :class:`BitsDropout` with the same p; returns how many were replaced.

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
                dropouts[adapter] = BitsDropout(old.p)
                replaced += 1
    return replaced
