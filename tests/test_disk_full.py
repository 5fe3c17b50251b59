"""Disk full during a write: the previous state stays intact, and the run resumes once there
is space again. The writes are patched to fail half-way with ENOSPC, the way a full disk does."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

import semievol.io as sio
from semievol.cli import main
from semievol.rundir import ItemLog, read_jsonl

from .test_pipeline import RecordingBackend, data, run_args  # noqa: F401  (fixture)

SMALL_CHUNKS = ("--model.batch_size", "2")  # committee chunks of 8 items


def no_space(path: str = "") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


class HalfWriter(io.TextIOWrapper):
    """A text file that accepts half of the first write, then reports a full disk."""

    def write(self, text: str) -> int:
        super().write(text[: len(text) // 2])
        self.flush()
        raise no_space(self.name if isinstance(self.name, str) else "")


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    sio.atomic_write_json(target, {"accuracy": 0.5})
    real_fdopen = os.fdopen

    def full_disk_fdopen(fd, mode="r", *args, **kwargs):
        if "w" in mode and "b" not in mode:
            return HalfWriter(real_fdopen(fd, "wb"), encoding="utf-8")
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(sio.os, "fdopen", full_disk_fdopen)
    with pytest.raises(OSError) as info:
        sio.atomic_write_json(target, {"accuracy": 0.9, "pad": "x" * 10_000})
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == '{\n  "accuracy": 0.5\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_atomic_directory_keeps_the_old_folder_when_the_disk_fills(tmp_path):
    folder = tmp_path / "adapter"
    with sio.atomic_directory(folder) as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(OSError), sio.atomic_directory(folder) as tmp:
        (tmp / "weights").write_text("new, half written")
        raise no_space(str(tmp / "weights"))
    assert (folder / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_item_log_torn_by_a_full_disk_is_repaired_on_resume(tmp_path):
    log = ItemLog(tmp_path / "votes.jsonl")
    log.append([{"id": "a", "vote": "A"}])
    with (tmp_path / "votes.jsonl").open("a") as f:
        f.write('{"id": "b", "vo')  # what a full disk leaves of the next append
    reopened = ItemLog(tmp_path / "votes.jsonl")
    assert list(reopened.records) == ["a"]
    reopened.append([{"id": "b", "vote": "B"}])
    assert [r["id"] for r in read_jsonl(tmp_path / "votes.jsonl")] == ["a", "b"]


def test_run_hit_by_a_full_disk_fails_with_one_line_and_resumes(
    data,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    monkeypatch.setattr("semievol.backends.build_backend", lambda config: RecordingBackend())
    reference = tmp_path / "reference"
    assert main(run_args(data, reference, *SMALL_CHUNKS)) == 0

    run_dir = tmp_path / "run"
    real_append = ItemLog.append
    appends = {"n": 0, "written": 0}

    def append_until_full(self, records):
        appends["n"] += 1
        if appends["n"] == 2:  # the second chunk of committee votes hits a full disk
            with self.path.open("a") as f:
                f.write('{"id": "half-writ')
            raise no_space(str(self.path))
        appends["written"] += len(records)
        return real_append(self, records)

    monkeypatch.setattr(ItemLog, "append", append_until_full)
    capsys.readouterr()
    assert main(run_args(data, run_dir, *SMALL_CHUNKS)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert "run the same command again" in err[0]
    assert "Traceback" not in "\n".join(err)
    votes = run_dir / "round1/committee/member0.jsonl"
    assert 0 < appends["written"] < 30
    assert len(read_jsonl_prefix(votes)) == appends["written"]  # finished chunks are kept
    assert not votes.read_text().endswith("\n")  # and the torn write is still there

    monkeypatch.setattr(ItemLog, "append", real_append)  # space freed
    assert main(run_args(data, run_dir, *SMALL_CHUNKS)) == 0
    for rel in ["round1/committee/member0.jsonl", "round1/select/pseudo_labels.jsonl"]:
        assert read_jsonl(run_dir / rel) == read_jsonl(reference / rel), rel


def read_jsonl_prefix(path: Path) -> list[str]:
    """The complete lines of a log (a torn last line is not a record)."""
    return [line for line in path.read_text().split("\n")[:-1] if line.endswith("}")]
