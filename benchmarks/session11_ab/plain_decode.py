"""The plain greedy decode loop (one batch, no pool, no stop tokens) that the micro-benchmarks
in this folder time, so that they measure a decode step and nothing around it."""

from __future__ import annotations

from typing import Any

import torch


class GreedySteps:
    """Greedy decode steps after a prompt pass (``out``, ``mask`` from ``_prompt_pass``)."""

    def __init__(self, net: Any, out: Any, mask: torch.Tensor) -> None:
        self.net, self.cache, self.mask = net, out.past_key_values, mask
        self.picked = out.logits[:, -1].argmax(-1)
        self.position = mask.sum(-1)

    def step(self) -> None:
        rows = self.mask.shape[0]
        self.mask = torch.cat([self.mask, self.mask.new_ones((rows, 1))], dim=1)
        out = self.net(
            input_ids=self.picked[:, None],
            attention_mask=self.mask,
            position_ids=self.position[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.position = self.position + 1
        self.picked = out.logits[:, -1].float().argmax(-1)
