"""A deterministic stand-in for a model, for tests of everything above the backend.

It "learns" by memorising the reply of each training prompt (keyed by the last user message);
unseen prompts get a fixed pseudo-random answer derived from a hash. Embeddings are hashed
bag-of-words vectors, so texts sharing words are near each other. Every call is counted in
``calls`` so tests can check that finished work is not recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semievol.backends import (
    GREEDY,
    Generation,
    ModelConfig,
    Sampling,
    TrainExample,
    TrainResult,
)
from semievol.errors import ModelLoadError
from semievol.io import atomic_directory, atomic_write_json, atomic_write_yaml

EMBED_DIM = 64


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def _key(messages: Sequence[dict[str, str]]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


class DummyBackend:
    def __init__(self, config: ModelConfig):
        self.config = config
        self.adapters: dict[str, dict[str, str]] = {}
        self.active: str | None = None
        self.calls: Counter[str] = Counter()

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        return "\n".join(f"<{m['role']}>{m['content']}" for m in messages) + "\n<assistant>"

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return len(self.render(messages).split())

    def _memory(self) -> dict[str, str]:
        return self.adapters[self.active] if self.active is not None else {}

    def score_choices(
        self,
        prompts: Sequence[Sequence[dict[str, str]]],
        choices: Sequence[Sequence[str]],
        **_: Any,
    ) -> list[list[float]]:
        self.calls["score_choices"] += len(prompts)
        out = []
        memory = self._memory()
        for messages, ch in zip(prompts, choices, strict=True):
            key = _key(messages)
            known = memory.get(key)
            if known in ch:
                probs = [0.9 if c == known else 0.1 / max(1, len(ch) - 1) for c in ch]
            else:
                # Unseen prompts: pseudo-random, but different demonstrations give other answers.
                seen = self.render(messages)
                logits = [(_hash(seen, c, str(self.active)) % 1000) / 250.0 for c in ch]
                top = max(logits)
                exps = [math.exp(v - top) for v in logits]
                probs = [e / sum(exps) for e in exps]
            out.append(probs)
        return out

    def generate(
        self,
        prompts: Sequence[Sequence[dict[str, str]]],
        *,
        samplings: Sequence[Sampling] = GREEDY,
        max_new_tokens: int = 64,
        **_: Any,
    ) -> list[list[Generation]]:
        if not samplings:
            raise ValueError("generate needs at least one sampling")
        self.calls["generate"] += len(prompts)
        memory = self._memory()
        out = []
        for messages in prompts:
            key = _key(messages)
            gens = []
            for s in samplings:
                salt = "greedy" if s.greedy else f"{s.seed}:{s.temperature:g}:{s.top_p:g}"
                text = memory.get(key) or f"answer {_hash(self.render(messages), salt) % 10}"
                gens.append(Generation(text, [-((_hash(key, salt, "lp") % 100) / 100.0)]))
            out.append(gens)
        return out

    def embed(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        self.calls["embed"] += len(texts)
        vectors = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                vectors[i, _hash(word) % EMBED_DIM] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def load_adapter(self, path: str | Path, **_: Any) -> str:
        file = Path(path) / "memory.json"
        if not file.is_file():
            raise ModelLoadError(f"{path}: not a dummy adapter (no memory.json)")
        name = f"adapter{len(self.adapters)}"
        self.adapters[name] = json.loads(file.read_text())
        self.active = name
        return name

    def use_adapter(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}")
        self.active = name

    def train(
        self,
        examples: Sequence[TrainExample],
        config: Any,
        output_dir: str | Path,
        *,
        init_adapter: str | Path | None = None,
        resolved_config: dict[str, Any] | None = None,
        epoch_end: Callable[[int], dict[str, float]] | None = None,
        **_: Any,
    ) -> TrainResult:
        self.calls["train"] += len(examples)
        t0 = time.perf_counter()
        memory: dict[str, str] = {}
        if init_adapter:
            memory.update(json.loads((Path(init_adapter) / "memory.json").read_text()))
        memory.update({_key(ex.messages): ex.target for ex in examples})
        output_dir = Path(output_dir)
        with atomic_directory(output_dir) as tmp:
            atomic_write_json(tmp / "memory.json", memory)
            atomic_write_json(tmp / "adapter_config.json", {"backend": "dummy"})
            if resolved_config is not None:
                atomic_write_yaml(tmp / "semievol_config.yaml", resolved_config)
        name = f"adapter{len(self.adapters)}"
        self.adapters[name] = memory
        self.active = name
        history = [
            {"epoch": e + 1, "loss": 0.0, **(epoch_end(e + 1) if epoch_end else {})}
            for e in range(config.epochs)
        ]
        return TrainResult(
            output_dir,
            name,
            len(examples),
            config.epochs,
            0.0,
            0,
            time.perf_counter() - t0,
            history,
        )
