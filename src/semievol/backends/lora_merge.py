"""Inference with a LoRA adapter folded into the base weights.

Unmerged, every adapted linear runs three matmuls (W x, A x, B (A x)) plus a scale and an add:
for SmolLM2-135M with 'all-linear' LoRA that is 21 matmuls per layer instead of 7, and the small
ones cost about as much per call as the big one on a CPU. Inference swaps in W + scale * B A
(one copy per adapter, rebuilt when the adapter's weights change) and runs the base layers
alone; training never sees the merged copies. Unlike PEFT's ``merge_adapter`` this never
writes into the base weights, so nothing has to be subtracted back (which is inexact in bf16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def _adapter_layers(net: Any, adapter: str) -> list[Any] | None:
    """The LoRA layers that carry ``adapter``, or None when one of them cannot be merged by a
    plain weight sum (DoRA and other variants, LoRA biases, embeddings, convolutions)."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    layers = []
    for module in net.modules():
        if not isinstance(module, LoraLayer):
            continue
        carries = adapter in module.lora_A or adapter in getattr(module, "lora_embedding_A", {})
        if not carries:
            continue
        plain = (
            type(module) is LoraLinear
            and adapter not in getattr(module, "lora_variant", {})
            and not getattr(module, "use_dora", {}).get(adapter, False)
            and not getattr(module, "lora_bias", {}).get(adapter, False)
            and module.get_base_layer().weight.dim() == 2
        )
        if not plain:
            return None
        layers.append(module)
    return layers


def _weights_version(layers: list[Any], adapter: str) -> tuple[tuple[int, int], ...]:
    """Changes whenever the adapter's weights do: in place (optimizer steps, loading a state
    dict bump a tensor's version counter) or by replacing the tensor."""
    params = [p for m in layers for p in (m.lora_A[adapter].weight, m.lora_B[adapter].weight)]
    return tuple((p.data_ptr(), p._version) for p in params)


class MergedAdapterWeights:
    """Merged copies of one adapter's weights (the last one used), built on demand."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._merged: list[tuple[torch.nn.Linear, torch.Tensor]] = []

    @torch.no_grad()
    def _build(self, layers: list[Any], adapter: str) -> list[tuple[torch.nn.Linear, torch.Tensor]]:
        merged = []
        for layer in layers:
            base = layer.get_base_layer()
            weight = base.weight
            delta = layer.get_delta_weight(adapter).to(torch.float32)
            # Sum in float32 and round once: as exact as storing a fine-tuned model in W's dtype.
            merged.append((base, (weight.float() + delta).to(weight.dtype)))
        return merged

    @contextlib.contextmanager
    def swapped_in(self, net: Any, adapter: str) -> Iterator[bool]:
        """Put the merged weights of ``adapter`` into the base layers for the duration; yields
        whether it could (False: run the adapter unmerged). The caller disables the adapter
        layers, so they compute the base layer alone."""
        layers = _adapter_layers(net, adapter)
        if not layers:
            yield False
            return
        key = (id(net), adapter, _weights_version(layers, adapter))
        if key != self._key:
            self._merged = []  # free the previous adapter's copy before building this one
            self._merged = self._build(layers, adapter)
            self._key = key
        # What is in place now, not the true originals: inside a nested inference context
        # (the batch-budget probe runs in the first scoring call) that is the merged copy.
        originals = [(base, base.weight.data) for base, _ in self._merged]
        try:
            for base, weight in self._merged:
                base.weight.data = weight
            yield True
        finally:
            for base, weight in originals:
                base.weight.data = weight
