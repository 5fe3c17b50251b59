"""Attention on CPU in training: the model's eager attention for short sequences, PyTorch SDPA
otherwise.

torch's CPU SDPA kernels are slow in the backward pass at the lengths of classification
prompts (100-400 tokens); the plain matmul + softmax of transformers' eager attention is
faster there (bf16, SmolLM2's 9 query / 3 KV heads, forward + backward: 16 x 96 tokens
30 -> 11 ms, 6 x 384 tokens 61 -> 42 ms; from 512 tokens on SDPA wins, 4 x 512: 66 vs
117 ms). Without gradients (scoring, generation) SDPA was as fast end to end and is more
precise (eager rounds attention probabilities to bf16 under autocast: on 64 fpb items the
largest option-probability error against float32 was 0.027 with eager, 0.020 with SDPA), so
inference always uses SDPA. BENCHMARKS.md, issue 5
session 6, has the measurements.

The choice is made per call, through transformers' attention registry. Without gradients
the mask is SDPA's own, so inference is exactly transformers' SDPA path; with gradients it is
the eager (additive float) mask, which SDPA also accepts for long sequences.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

NAME = "semievol_cpu"
EAGER_MAX_KEYS = 384
"""Longest key sequence that goes to eager attention in training (measured crossover: 384-512)."""


def _eager_for(module: torch.nn.Module) -> Callable[..., Any] | None:
    """The eager attention of the module's own modeling file (it knows the model's quirks:
    soft-capping, sinks, ...), or None if that file has none."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def cpu_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    eager = _eager_for(module)
    if eager is not None and torch.is_grad_enabled() and key.shape[-2] <= EAGER_MAX_KEYS:
        return eager(module, query, key, value, attention_mask, **kwargs)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def cpu_attention_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    from transformers.masking_utils import eager_mask, sdpa_mask

    if torch.is_grad_enabled():
        return eager_mask(*args, **kwargs)
    return sdpa_mask(*args, **kwargs)


def register_cpu_attention() -> str:
    """Make ``NAME`` a transformers attention implementation; returns it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, cpu_attention)
    AttentionMaskInterface.register(NAME, cpu_attention_mask)
    return NAME
