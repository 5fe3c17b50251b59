"""Peak memory (resident set size) of a stretch of work, on Linux.

The kernel keeps the process's high-water mark (VmHWM); writing "5" to /proc/self/clear_refs
resets it, so every stage can report its own peak rather than the process's lifetime peak.
Elsewhere the functions return None. On a CUDA device the GPU's own peak (memory allocated by
torch) is tracked beside it; without CUDA in use those functions return None as well.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> None:
    """Start a new high-water mark. Memory the process freed but kept for reuse (see
    ``backends/allocator.py``) is handed back first, so that it does not count as the next
    stretch's peak."""
    from semievol.backends.allocator import release_freed_memory

    release_freed_memory()
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


def peak_rss_mb() -> float | None:
    """Peak RSS in MiB since the last ``reset_peak_rss`` (or process start)."""
    return _status_mb("VmHWM")


def current_rss_mb() -> float | None:
    """RSS in MiB now."""
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cuda() -> object | None:
    """torch.cuda if torch is imported and has initialised a GPU (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def reset_peak_gpu() -> None:
    cuda = _cuda()
    if cuda is not None:
        cuda.synchronize()
        cuda.reset_peak_memory_stats()


def peak_gpu_mb() -> float | None:
    """Peak GPU memory allocated by torch in MiB since the last ``reset_peak_gpu``; None when
    no GPU is in use."""
    cuda = _cuda()
    if cuda is None:
        return None
    cuda.synchronize()
    return round(cuda.max_memory_allocated() / 2**20, 1)
