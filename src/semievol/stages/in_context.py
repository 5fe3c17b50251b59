"""In-context propagation: every unlabeled item gets its nearest labeled examples as few-shot
demonstrations.

Questions are embedded (by default with the labeling model's own hidden states, so the SFT model
decides what "similar" means), neighbours are found by exact cosine similarity on normalised
vectors (FAISS optional for large sets), and the embeddings and neighbour lists are stage
artifacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from semievol.data import Example
from semievol.errors import ConfigError
from semievol.io import atomic_write_jsonl, atomic_write_npy
from semievol.trace import trace

if TYPE_CHECKING:
    from semievol.backends import Backend

SENTENCE_TRANSFORMERS = "sentence-transformers:"


@dataclass
class InContextConfig:
    k: int = 3
    """Demonstrations per unlabeled item: its k nearest labeled examples, nearest last."""
    embedder: str = "model"
    """model: mean-pooled last hidden states of the labeling model (the SFT adapter in round 1);
    or sentence-transformers:NAME for a sentence-embedding model (needs the sentence-transformers
    package)."""
    demo_format: Literal["inline", "turns"] = "inline"
    """inline: the demonstrations are solved examples inside the question's user message;
    turns: earlier user/assistant chat turns. A model fine-tuned on single-turn prompts can
    collapse on multi-turn ones (SmolLM2-135M SFT on fpb answered 'positive' to 1,358 of 1,359
    items with turns; see BENCHMARKS.md)."""
    index: Literal["exact", "faiss"] = "exact"
    """exact: cosine similarity against every labeled vector (numpy); faiss: a FAISS flat
    inner-product index (needs faiss-cpu; same neighbours, faster on very large sets)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.embedder != "model" and not (
            self.embedder.startswith(SENTENCE_TRANSFORMERS)
            and len(self.embedder) > len(SENTENCE_TRANSFORMERS)
        ):
            raise ValueError(
                f"embedder must be 'model' or 'sentence-transformers:NAME', got {self.embedder!r}"
            )


def embed_questions(backend: Backend, texts: Sequence[str], embedder: str) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    if embedder == "model":
        return np.asarray(backend.embed(texts), dtype=np.float32)
    name = embedder[len(SENTENCE_TRANSFORMERS) :]
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            f"in_context.embedder {embedder!r} needs the sentence-transformers package: "
            "pip install sentence-transformers"
        ) from None
    model = SentenceTransformer(name)
    vectors = model.encode(list(texts), normalize_embeddings=True, show_progress_bar=True)
    return np.asarray(vectors, dtype=np.float32)


def embed_in_parts(
    backend: Backend,
    examples: Sequence[Example],
    embedder: str,
    parts_dir: Path,
    name: str,
    *,
    part_size: int = 256,
) -> np.ndarray:
    """``embed_questions`` in fixed parts of ``part_size`` questions, each saved as it finishes
    (``<parts_dir>/<name>_<start>.npy``): a killed stage resumes from the parts it has. Part
    boundaries do not depend on what was already done, so a resumed run embeds exactly the same
    batches as an uninterrupted one."""
    parts = []
    for start in range(0, len(examples), part_size):
        chunk = examples[start : start + part_size]
        path = parts_dir / f"{name}_{start:07d}.npy"
        if path.is_file():
            part = np.load(path, allow_pickle=False)
            if part.shape[0] == len(chunk):
                parts.append(part)
                continue
        trace("compute", log=str(path.resolve()), ids=[ex.id for ex in chunk])
        part = embed_questions(backend, [ex.question for ex in chunk], embedder)
        atomic_write_npy(path, part)
        trace("logged", log=str(path.resolve()), ids=[ex.id for ex in chunk])
        parts.append(part)
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)


def nearest_neighbors(
    queries: np.ndarray, keys: np.ndarray, k: int, *, index: str = "exact", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), each of shape (len(queries), min(k, len(keys))): the keys with
    the highest cosine similarity to each query, most similar first; ties go to the lower index."""
    k = min(k, len(keys))
    if index == "faiss":
        try:
            import faiss
        except ImportError:
            raise ConfigError(
                "in_context.index 'faiss' needs the faiss-cpu package: pip install faiss-cpu"
            ) from None
        flat = faiss.IndexFlatIP(keys.shape[1])
        flat.add(np.ascontiguousarray(keys, dtype=np.float32))
        sims, idx = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return idx.astype(np.int64), sims
    all_idx = np.empty((len(queries), k), dtype=np.int64)
    all_sims = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ keys.T
        # Stable sort on -similarity keeps the lower index first among equals.
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        all_idx[start : start + chunk] = order
        all_sims[start : start + chunk] = np.take_along_axis(sims, order, axis=1)
    return all_idx, all_sims


def propagate_in_context(
    backend: Backend,
    labeled: Sequence[Example],
    unlabeled: Sequence[Example],
    config: InContextConfig,
    stage_dir: Path,
    *,
    neighbors_kept: int,
) -> dict[str, Any]:
    """Embed both sets, store the ``neighbors_kept`` nearest labeled ids of every unlabeled item
    (``neighbors.jsonl``) and the embeddings (``.npy``)."""
    vectors_l = embed_in_parts(backend, labeled, config.embedder, stage_dir / "parts", "labeled")
    vectors_u = embed_in_parts(
        backend, unlabeled, config.embedder, stage_dir / "parts", "unlabeled"
    )
    atomic_write_npy(stage_dir / "embeddings_labeled.npy", vectors_l)
    atomic_write_npy(stage_dir / "embeddings_unlabeled.npy", vectors_u)
    idx, sims = nearest_neighbors(vectors_u, vectors_l, neighbors_kept, index=config.index)
    rows = [
        {
            "id": ex.id,
            "neighbors": [labeled[j].id for j in idx[i]],
            "cosine": [round(float(s), 6) for s in sims[i]],
        }
        for i, ex in enumerate(unlabeled)
    ]
    atomic_write_jsonl(stage_dir / "neighbors.jsonl", rows)
    return {
        "labeled": len(labeled),
        "unlabeled": len(unlabeled),
        "dim": int(vectors_l.shape[1]),
        "mean_top1_cosine": float(sims[:, 0].mean()) if len(sims) else 0.0,
    }


def load_neighbors(stage_dir: Path) -> dict[str, list[str]]:
    from semievol.rundir import read_jsonl

    return {r["id"]: r["neighbors"] for r in read_jsonl(stage_dir / "neighbors.jsonl")}
