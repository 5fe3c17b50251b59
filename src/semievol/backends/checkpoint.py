"""Training checkpoints of the HF backend: resume a killed LoRA training where it stopped.

A checkpoint is a folder written atomically next to the adapter's output folder
(``<output_dir>.checkpoint``): ``state.safetensors`` holds the trainable LoRA weights, AdamW's
moments, the best epoch's weights so far and torch's RNG state (dropout); ``state.json`` holds
the position (epoch, next micro-batch), optimizer hyper-parameters, scheduler state, history and
the sha256 of the tensor file. Checkpoints are taken only after an optimizer step, so there are
no half-accumulated gradients to lose, and batch order is a pure function of (seed, epoch): a
resumed run performs exactly the remaining steps of the uninterrupted one and ends with a
bit-identical adapter (tests/test_kill_resume.py). A checkpoint whose fingerprint (training
config, encoded examples, initial adapter) differs, or whose tensor file fails its checksum, is
ignored with a warning rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from semievol.io import atomic_directory, atomic_write_json
from semievol.rundir import file_sha256
from semievol.training import TrainConfig, result_key

log = logging.getLogger(__name__)

STATE_TENSORS = "state.safetensors"
STATE_META = "state.json"


def training_fingerprint(
    config: TrainConfig,
    encoded: Sequence[tuple[list[int], int]],
    init_adapter: str | Path | None,
) -> str:
    """What a checkpoint must match to be resumed: config, token ids, initial adapter bytes."""
    digest = hashlib.sha256()
    key = {k: v for k, v in result_key(config).items() if k != "output_dir"}
    digest.update(json.dumps(key, sort_keys=True, default=str).encode())
    for ids, n_loss in encoded:
        digest.update(json.dumps([ids, n_loss]).encode())
    if init_adapter is not None:
        weights = Path(init_adapter) / "adapter_model.safetensors"
        digest.update(file_sha256(weights).encode() if weights.is_file() else b"none")
    return digest.hexdigest()


class TrainingCheckpoint:
    """Save and restore the complete state of one training run."""

    def __init__(self, path: Path, *, fingerprint: str, net: Any, adapter_name: str):
        self.path = path
        self.fingerprint = fingerprint
        self.adapter_name = adapter_name
        self.named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]

    def _portable(self, name: str) -> str:
        # Adapter names depend on load order, which differs between a run and its resumption.
        return name.replace(f".{self.adapter_name}.", ".ADAPTER.")

    def save(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        *,
        epoch: int,
        batch: int,
        step: int,
        tokens_seen: int,
        epoch_losses: list[float],
        history: list[dict[str, Any]],
        best: tuple[float, int, dict[str, torch.Tensor]] | None,
        seconds: float,
    ) -> None:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {
            f"param/{self._portable(n)}": p.detach().contiguous() for n, p in self.named
        }
        opt = optimizer.state_dict()
        for index, state in opt["state"].items():
            for k, v in state.items():
                tensors[f"optim/{index}/{k}"] = torch.as_tensor(v).contiguous()
        if best is not None:
            for n, t in best[2].items():
                tensors[f"best/{self._portable(n)}"] = t.contiguous()
        tensors["rng/torch"] = torch.get_rng_state()
        with atomic_directory(self.path) as tmp:
            save_file(tensors, str(tmp / STATE_TENSORS))
            meta = {
                "fingerprint": self.fingerprint,
                "tensors_sha256": file_sha256(tmp / STATE_TENSORS),
                "epoch": epoch,
                "batch": batch,
                "step": step,
                "tokens_seen": tokens_seen,
                "epoch_losses": epoch_losses,
                "history": history,
                "best": None if best is None else {"score": best[0], "epoch": best[1]},
                "seconds": seconds,
                "optimizer_groups": opt["param_groups"],
                "scheduler": scheduler.state_dict(),
            }
            atomic_write_json(tmp / STATE_META, meta)

    @staticmethod
    def initial_state() -> dict[str, Any]:
        """The position and history of a training that starts at step 0 (what ``load`` returns
        for a checkpoint)."""
        return {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "tokens_seen": 0,
            "epoch_losses": [],
            "history": [],
            "best": None,
            "seconds": 0.0,
        }

    def load(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any] | None:
        """Restore weights, optimizer, scheduler and RNG; the position and history, or None."""
        meta_path = self.path / STATE_META
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("fingerprint") != self.fingerprint:
                log.warning("%s belongs to another training run; starting from step 0", self.path)
                return None
            tensor_file = self.path / STATE_TENSORS
            if file_sha256(tensor_file) != meta["tensors_sha256"]:
                raise ValueError("checksum mismatch")
            from safetensors.torch import load_file

            tensors = load_file(str(tensor_file))
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s is damaged (%s); starting from step 0", self.path, e)
            return None
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(tensors[f"param/{self._portable(n)}"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, t in tensors.items():
            if key.startswith("optim/"):
                _, index, k = key.split("/", 2)
                state.setdefault(int(index), {})[k] = t
        groups = meta["optimizer_groups"]
        for group in groups:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        scheduler.load_state_dict(meta["scheduler"])
        torch.set_rng_state(tensors["rng/torch"])
        best = None
        if meta["best"] is not None:
            weights = {n: tensors[f"best/{self._portable(n)}"] for n, _ in self.named}
            best = (meta["best"]["score"], meta["best"]["epoch"], weights)
        return {**meta, "best": best}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
