"""LoRA's training step through one autograd function per adapted linear layer.

PEFT computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling``. In training each adapted
layer (7 per block of a Llama) then writes a scaled copy of its input (the dropout), and the
product, the scaled product and the sum are each a new tensor the size of the layer's output;
autograd keeps the dropped-out input for the backward pass, and the backward pass repeats the
scalings. On CPU these passes over memory cost more than the two rank-r matmuls they surround.

Here the dropout mask is applied without its 1 / (1 - p) scale, which is folded into the LoRA
scale; the update is added into the base layer's output in place by one ``addmm_``; and the
backward pass recomputes the dropped-out input from the input and the boolean mask, which are
kept anyway, instead of keeping a copy. The function and its gradients are PEFT's up to float
rounding, and the dropout mask is drawn exactly as ``BitsDropout`` draws it, from the same
random stream, so a seed gives the same masks on both paths (tests).

Only the plain case is fused: gradients on, one active adapter, a ``torch.nn.Linear`` base
layer, no DoRA or other variant, no LoRA bias, the dropout ``BitsDropout`` or none. Anything
else, and every call without gradients, goes to PEFT's own forward.
"""

from __future__ import annotations

from typing import Any

import torch

from semievol.backends.lora_dropout import BitsDropout, drop_mask


class _AddLoraUpdate(torch.autograd.Function):
    """``result += alpha * (x masked by drop) @ A.T @ B.T`` in place; ``result`` is the base
    layer's output, which autograd does not need for the base layer's backward pass."""

    @staticmethod
    def forward(
        ctx: Any,
        result: torch.Tensor,
        x: torch.Tensor,
        weight_a: torch.Tensor,
        weight_b: torch.Tensor,
        drop: torch.Tensor | None,
        alpha: float,
    ) -> torch.Tensor:
        with torch.autocast(result.device.type, enabled=False):
            dtype = result.dtype
            a, b = weight_a.to(dtype), weight_b.to(dtype)
            h = _dropped(x, drop, dtype) @ a.T
            result.view(-1, result.shape[-1]).addmm_(h, b.T, alpha=alpha)
        ctx.mark_dirty(result)
        ctx.save_for_backward(x, drop, h, a, b)
        ctx.alpha = alpha
        ctx.weight_dtypes = (weight_a.dtype, weight_b.dtype)
        return result

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, drop, h, a, b = ctx.saved_tensors
        need_x, need_a, need_b = ctx.needs_input_grad[1:4]
        grad_x = grad_a = grad_b = None
        with torch.autocast(grad.device.type, enabled=False):
            g = grad.reshape(-1, grad.shape[-1])
            if need_b:
                grad_b = (g.T @ h).mul_(ctx.alpha).to(ctx.weight_dtypes[1])
            if need_x or need_a:
                grad_h = (g @ b).mul_(ctx.alpha)
                if need_a:
                    grad_a = (grad_h.T @ _dropped(x, drop, h.dtype)).to(ctx.weight_dtypes[0])
                if need_x:
                    grad_x = grad_h @ a
                    if drop is not None:
                        grad_x.masked_fill_(drop.view(grad_x.shape), 0)
                    grad_x = grad_x.to(x.dtype).view(x.shape)
        return grad, grad_x, grad_a, grad_b, None, None


def _dropped(x: torch.Tensor, drop: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """x as rows, in ``dtype``, zeroed where ``drop`` (not rescaled)."""
    rows = x.reshape(-1, x.shape[-1]).to(dtype)
    return rows if drop is None else rows.masked_fill(drop.view(rows.shape), 0)


def _plain_lora_adapter(module: Any) -> str | None:
    """The one active adapter of ``module`` if its forward is the plain case fused here."""
    if module.disable_adapters or module.merged or len(module.active_adapters) != 1:
        return None
    name = module.active_adapters[0]
    if name not in module.lora_A or name in getattr(module, "lora_variant", {}):
        return None
    if not isinstance(module.base_layer, torch.nn.Linear) or module.lora_B[name].bias is not None:
        return None
    dropout = module.lora_dropout[name]
    if not isinstance(dropout, (BitsDropout, torch.nn.Identity)):
        return None
    return name


def _fused_forward(module: Any, original: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    name = _plain_lora_adapter(module) if torch.is_grad_enabled() and not (args or kwargs) else None
    if name is None:
        return original(x, *args, **kwargs)
    weight_a, weight_b = module.lora_A[name].weight, module.lora_B[name].weight
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    elif weight_a.dtype == module.base_layer.weight.dtype == x.dtype:
        dtype = x.dtype
    else:  # PEFT computes the update in the adapter's dtype and casts back: leave it to PEFT
        return original(x, *args, **kwargs)
    result = module.base_layer(x)
    if result.dtype != dtype:
        return original(x, *args, **kwargs)
    result = result.contiguous()
    dropout = module.lora_dropout[name]
    p = dropout.p if isinstance(dropout, BitsDropout) and dropout.training else 0.0
    drop = drop_mask(x.shape, p, x.device) if p > 0 else None
    alpha = module.scaling[name] / (1.0 - p)
    return _AddLoraUpdate.apply(result, x, weight_a, weight_b, drop, alpha)


def use_fused_lora(net: torch.nn.Module) -> int:
    """Route the training forward of ``net``'s LoRA linear layers through the fused function
    (once per layer; it checks at every call whether it applies); returns how many layers were
    newly routed."""
    from peft.tuners.lora import Linear as LoraLinear

    routed = 0
    for module in net.modules():
        if isinstance(module, LoraLinear) and "forward" not in vars(module):
            original = module.forward

            def forward(
                x: torch.Tensor, *args: Any, _m: Any = module, _o: Any = original, **kw: Any
            ):
                return _fused_forward(_m, _o, x, *args, **kw)

            module.forward = forward
            routed += 1
    return routed
