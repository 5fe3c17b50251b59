"""Runs one arm of an A/B in a fresh Python process (process-wide settings such as the malloc
ones cannot be undone within a process) and returns the JSON line it prints last."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_child(script: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
