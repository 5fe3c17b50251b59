"""The run directory: one folder per stage, a manifest of finished stages, resumable item logs.

A stage is skipped when the manifest holds an entry with the same key (a hash of the stage's
config and inputs, including the keys of the stages it reads from) and every artifact still has
the checksum recorded when the stage finished. Anything else re-runs the stage, and because
downstream keys contain upstream keys, everything after it re-runs too. Long inference stages
append one JSON line per finished item to an ``ItemLog``; a re-run with the same key reads it
back and only computes what is missing.

With a stage cache (``pipeline.stage_cache``), every finished stage is also copied there under
its key, and a run that needs a stage with the same key copies it back instead of recomputing:
the SFT adapter of one config serves every ablation that shares it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from semievol.data import Example
from semievol.errors import ConfigError
from semievol.io import atomic_write_json, atomic_write_text
from semievol.resources import peak_gpu_mb, peak_rss_mb, reset_peak_gpu, reset_peak_rss
from semievol.trace import trace

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGE_KEY_FILE = ".stage_key"
CACHE_ENTRY = "entry.json"


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON rendering (dataclasses become dicts)."""

    def default(o: Any) -> Any:
        if is_dataclass(o) and not isinstance(o, type):
            return asdict(o)
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"cannot hash {type(o).__name__}")

    text = json.dumps(obj, sort_keys=True, default=default, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_examples(examples: Sequence[Example], *, with_audit: bool = False) -> str:
    """Content hash of a dataset as the pipeline sees it (ids, questions, options, answers)."""
    rows = [
        [ex.id, ex.question, ex.options, ex.answer] + ([ex.audit_gold] if with_audit else [])
        for ex in examples
    ]
    return stable_hash(rows)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SCRATCH_SUFFIXES = (".tmp", ".old")
"""Temporary files and folders of atomic writes (``*.tmp``, ``.name.old``)."""


def _is_scratch(rel: Path) -> bool:
    return any(part.endswith(SCRATCH_SUFFIXES) for part in rel.parts)


def _artifact_files(stage_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(stage_dir)): file_sha256(p)
        for p in sorted(stage_dir.rglob("*"))
        if p.is_file() and p.name != STAGE_KEY_FILE and not _is_scratch(p.relative_to(stage_dir))
    }


def _remove_scratch(stage_dir: Path) -> None:
    """Delete what killed atomic writes left behind, before a stage resumes."""
    for p in sorted(stage_dir.rglob("*"), key=lambda q: len(q.parts)):
        if p.exists() and p.name.endswith(SCRATCH_SUFFIXES):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


class RunDir:
    """Stage bookkeeping of one run directory."""

    def __init__(
        self, root: str | Path, *, force: str | None = None, cache: str | Path | None = None
    ):
        self.root = Path(root)  # created by the first write, so a failed check leaves nothing
        self.force = force
        self.cache = Path(cache) if cache else None
        self._forcing = False
        self.executed: list[str] = []
        self.skipped: list[str] = []
        self.manifest = self._load_manifest()

    def _load_manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.exists():
            return {"stages": {}}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(manifest.get("stages"), dict):
                raise ValueError("no stages")
            return manifest
        except (ValueError, AttributeError):
            log.warning("%s is unreadable; every stage will be recomputed", path)
            return {"stages": {}}

    def _save_manifest(self) -> None:
        atomic_write_json(self.root / MANIFEST, self.manifest)

    def check_force(self, stage_names: Iterable[str]) -> None:
        """Fail early on a ``--force`` that names no stage of this run."""
        if self.force is None:
            return
        names = list(stage_names)
        if not any(self._matches(n) for n in names):
            raise ConfigError(
                f"--force {self.force}: no such stage; stages of this run: {', '.join(names)}"
            )

    def _matches(self, name: str) -> bool:
        parts = name.split("/")
        return self.force in (name, parts[0], parts[-1])

    def entry(self, name: str) -> dict[str, Any] | None:
        return self.manifest["stages"].get(name)

    def stage(
        self,
        name: str,
        key_material: Any,
        compute: Callable[[Path], dict[str, Any]],
        *,
        resumable: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        """Run ``compute(stage_dir)`` unless an intact result with the same key exists.

        Returns (stage key, outputs): ``outputs`` is the JSON-able dict ``compute`` returned,
        stored in the manifest. With ``resumable``, files left in the stage folder by an
        interrupted run with the same key are kept for ``compute`` to continue from.
        """
        key = stable_hash(key_material)
        stage_dir = self.root / name
        if self.force is not None and self._matches(name):
            self._forcing = True
        entry = self.entry(name)
        if not self._forcing and entry is not None and entry["key"] == key:
            if self._intact(stage_dir, entry):
                log.info("stage %s: up to date, skipped", name)
                self.skipped.append(name)
                return key, entry["outputs"]
            log.warning(
                "stage %s: artifacts missing or changed since it finished; recomputing", name
            )

        if not self._forcing and self._restore_from_cache(name, key, stage_dir):
            self.skipped.append(name)
            return key, self.manifest["stages"][name]["outputs"]

        key_file = stage_dir / STAGE_KEY_FILE
        same_work = key_file.is_file() and key_file.read_text().strip() == key
        if stage_dir.exists() and not (resumable and same_work and not self._forcing):
            shutil.rmtree(stage_dir)
        elif stage_dir.exists():
            log.info("stage %s: resuming interrupted work", name)
            _remove_scratch(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(key_file, key)
        if self.manifest["stages"].pop(name, None) is not None:
            self._save_manifest()

        started = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        log.info("stage %s: running", name)
        trace("stage_start", stage=name)
        reset_peak_rss()
        reset_peak_gpu()
        outputs = compute(stage_dir)
        seconds = time.perf_counter() - t0
        self.manifest["stages"][name] = {
            "key": key,
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(seconds, 2),
            "peak_rss_mb": peak_rss_mb(),
            "peak_gpu_mb": peak_gpu_mb(),
            "files": _artifact_files(stage_dir),
            "outputs": outputs,
        }
        self._save_manifest()
        self._store_in_cache(name, key, stage_dir)
        trace("stage_done", stage=name)
        self.executed.append(name)
        return key, outputs

    # --- shared stage cache: runs with identical stage inputs (same key) reuse the result ----

    def _cache_dir(self, name: str, key: str) -> Path:
        assert self.cache is not None
        return self.cache / f"{name.replace('/', '-')}-{key[:24]}"

    def _restore_from_cache(self, name: str, key: str, stage_dir: Path) -> bool:
        if self.cache is None:
            return False
        cached = self._cache_dir(name, key)
        try:
            entry = json.loads((cached / CACHE_ENTRY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if entry.get("key") != key or not self._intact(cached / "files", entry):
            log.warning("stage %s: cached copy in %s is damaged; recomputing", name, cached)
            return False
        tmp = stage_dir.with_name(stage_dir.name + ".restoring.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(cached / "files", tmp)
        shutil.rmtree(stage_dir, ignore_errors=True)
        tmp.rename(stage_dir)
        atomic_write_text(stage_dir / STAGE_KEY_FILE, key)
        self.manifest["stages"][name] = {**entry, "cached_from": str(cached)}
        self._save_manifest()
        log.info("stage %s: reused from the stage cache (%s)", name, cached)
        return True

    def _store_in_cache(self, name: str, key: str, stage_dir: Path) -> None:
        if self.cache is None:
            return
        cached = self._cache_dir(name, key)
        if (cached / CACHE_ENTRY).is_file():
            return
        tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(stage_dir, tmp / "files", ignore=shutil.ignore_patterns(STAGE_KEY_FILE))
        atomic_write_json(tmp / CACHE_ENTRY, self.manifest["stages"][name])
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)

    @staticmethod
    def _intact(stage_dir: Path, entry: dict[str, Any]) -> bool:
        for rel, digest in entry.get("files", {}).items():
            path = stage_dir / rel
            if not path.is_file() or file_sha256(path) != digest:
                return False
        return True


class ItemLog:
    """Append-only JSON lines of finished items, keyed by ``id``.

    Each append is flushed and fsynced, so a crash loses at most the batch being computed. A torn
    last line (killed mid-write) is cut off when the log is reopened.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        good_bytes = 0
        with self.path.open("rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    break
                if not line.endswith(b"\n") or not isinstance(record, dict) or "id" not in record:
                    break
                self.records[record["id"]] = record
                good_bytes += len(line)
        if good_bytes != self.path.stat().st_size:
            log.warning("%s: dropping a torn record left by an interrupted run", self.path)
            with self.path.open("r+b") as f:
                f.truncate(good_bytes)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def computing(self, ids: Iterable[str]) -> None:
        """Mark items as handed to the model (a trace event; see ``semievol.trace``)."""
        trace("compute", log=str(self.path.resolve()), ids=list(ids))

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for record in records:
            self.records[record["id"]] = record
        trace("logged", log=str(self.path.resolve()), ids=[r["id"] for r in records])


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
