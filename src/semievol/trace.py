"""An event trace for fault-injection tests: which items each process computed and logged.

Off unless ``SEMIEVOL_TRACE`` names a file. Every event is one JSON line written with a single
``write`` on an ``O_APPEND`` descriptor, so lines from successive (killed and resumed) processes
never interleave; a process killed mid-write leaves at most one torn last line, which readers
skip. The kill-anywhere test (tests/test_kill_resume.py) uses it to kill the pipeline inside a
chosen stage and to prove that no finished item is computed twice.
"""

from __future__ import annotations

import json
import os
from typing import Any

ENV = "SEMIEVOL_TRACE"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def trace(event: str, **fields: Any) -> None:
    """Append ``{"event": event, "pid": ..., **fields}`` to the trace file, if tracing is on."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), **fields}, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_trace(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete event of a trace file (a torn last line is skipped)."""
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events
