"""The LoRA dropout of before session 12 (at 180e649), kept as the "before" arm of the A/Bs in
this folder: a random 16-bit draw and a comparison per element, a masked fill and a scaling."""

from __future__ import annotations

from typing import Any

import torch


def drop_mask(shape: torch.Size, p: float) -> torch.Tensor:
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64)
    words.random_(-(1 << 63), None)
    return words.view(torch.int16)[:n].view(shape) < -(1 << 15) + round(p * (1 << 16))


def mask_and_scale(x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
    return x.masked_fill(drop, 0).mul_(scale)


class _DropAndScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return mask_and_scale(x, drop, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (drop,) = ctx.saved_tensors
        return mask_and_scale(grad, drop, ctx.scale), None, None


def use_mask_dropout() -> None:
    """Make SparseDropout behave as the dropout of before, in this process."""
    from semievol.backends.lora_dropout import SparseDropout

    def forward(self: SparseDropout, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if torch.is_autocast_enabled("cpu") and x.is_floating_point():
            x = x.to(torch.get_autocast_dtype("cpu"))
        return _DropAndScale.apply(x, drop_mask(x.shape, self.p), 1.0 / (1.0 - self.p))

    SparseDropout.forward = forward
