"""KV caches for the HF backend's decode loop: written in place, and merged across batches.

transformers' ``DynamicLayer`` appends each decode step's keys and values with ``torch.cat``,
which copies the layer's whole cache at every step: with 16 rows at 1,169 positions that copy
was 65 % of a decode step on CPU (SmolLM2-135M, BENCHMARKS.md issue 5 session 11), and it grows
with the reply. ``InPlaceLayer`` keeps keys and values at the front of a buffer with room to
spare; a step writes its position into the room.

``merge_rows`` builds one such cache from the rows still decoding and from newly read prompts
(continuous batching): rows are aligned at their right end, as left padding aligns a batch, and
columns that are padding in every row are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class InPlaceLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` are views of the first ``length`` positions
    of larger buffers. Subclassed because transformers' caches accept only their own layer
    type; only writing and the batch operations change, the rest (lengths, masks) reads
    ``keys`` as before."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._keys, self._values = keys, values
        self._view(length)

    def _view(self, length: int) -> None:
        self.keys = self._keys[:, :, :length]
        self.values = self._values[:, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, m = self.keys.shape[-2], key_states.shape[-2]
        if n + m > self._keys.shape[-2]:  # out of room: double it (rare, amortised)
            self._keys = _with_room(self.keys, max(n, m))
            self._values = _with_room(self.values, max(n, m))
        self._keys[:, :, n : n + m] = key_states
        self._values[:, :, n : n + m] = value_states
        self._view(n + m)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = self.keys.shape[-2]
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._view(n)

    def batch_repeat_interleave(self, repeats: int) -> None:
        n = self.keys.shape[-2]
        self._keys = self._keys.repeat_interleave(repeats, dim=0)
        self._values = self._values.repeat_interleave(repeats, dim=0)
        self._view(n)

    def crop(self, max_length: int) -> None:
        n = self.keys.shape[-2]
        self._view(n + max_length if max_length < 0 else min(n, max_length))


def _with_room(t: torch.Tensor, room: int) -> torch.Tensor:
    out = t.new_zeros((*t.shape[:2], t.shape[2] + room, t.shape[3]))
    out[:, :, : t.shape[2]] = t
    return out


def mergeable(cache: Any) -> bool:
    """Whether ``merge_rows`` can take this cache: plain full-attention layers only (sliding
    window and recurrent layers keep state that left padding would corrupt)."""
    layers = getattr(cache, "layers", None)
    return (
        isinstance(cache, DynamicCache)
        and bool(layers)
        and all(type(layer) in (DynamicLayer, InPlaceLayer) for layer in layers)
    )


def merge_rows(
    parts: Sequence[tuple[Any, torch.Tensor, torch.Tensor | None]], room: int
) -> tuple[Any, torch.Tensor]:
    """One cache and attention mask from ``parts``: (cache, mask, rows to keep or None for all),
    each cache as wide as its mask. Rows are right-aligned (shorter parts padded on the left,
    mask 0), columns that are padding in every kept row are dropped, and every layer gets
    ``room`` free positions for the steps to come. Returns the first part's cache object with
    new layers, and the mask."""
    kept = []
    for cache, mask, rows in parts:
        if rows is not None:
            mask = mask[rows]
        kept.append((cache, mask, rows))
    width = max(mask.shape[1] for _, mask, _ in kept)
    masks = torch.cat(
        [torch.nn.functional.pad(mask, (width - mask.shape[1], 0)) for _, mask, _ in kept]
    )
    # every row has a real token, so some column is not all padding
    start = int(masks.any(dim=0).nonzero()[0])
    new_width = width - start
    layers = []
    for i in range(len(kept[0][0].layers)):
        merged = []
        for name in ("keys", "values"):
            first = getattr(kept[0][0].layers[i], name)
            out = first.new_zeros(
                (masks.shape[0], first.shape[1], new_width + room, first.shape[3])
            )
            row = 0
            for cache, _, rows in kept:
                t = getattr(cache.layers[i], name)
                if rows is not None:
                    t = t.index_select(0, rows)
                pad = width - t.shape[2]
                out[row : row + t.shape[0], :, max(0, pad - start) : new_width] = t[
                    :, :, max(0, start - pad) :
                ]
                row += t.shape[0]
            merged.append(out)
        layers.append(InPlaceLayer(merged[0], merged[1], new_width))
    cache = kept[0][0]
    cache.layers = layers
    return cache, masks[:, start:]
