"""Keep the memory torch frees inside the process (glibc malloc settings), for CPU work.

A training step allocates its activations and frees them all at the end; the next step
allocates them again. By default glibc hands large freed blocks straight back to the kernel:
blocks above its mmap threshold are unmapped, the top of the heap is trimmed, and a worker
thread's arena is unmapped once it empties. Every step then touches hundreds of megabytes of
fresh pages, and each 4 KiB page costs a page fault and a zeroing by the kernel (in a virtual
machine, often by the host too). On the 2-core development VM that was ~700 k page faults and
5-10 s of system time per 64-row training epoch, ~1.2x of the epoch's time (BENCHMARKS.md,
issue 5 session 12).

Three ``mallopt`` settings keep the memory for reuse instead: no mmap for large blocks, no
trimming of the heap, and one arena, so blocks freed by torch's worker threads land in the
same heap as the rest. The price: the resident size stays at the process's peak until it
exits, instead of shrinking between stages. Only glibc has ``mallopt``; elsewhere this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_NEVER_TRIM = -1  # glibc reads it as the largest size: the heap top is never trimmed

_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # gnu_get_libc_version exists only in glibc; musl and others have no mallopt semantics
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def retain_freed_memory() -> bool:
    """Apply the settings once per process; returns whether they are in effect."""
    global _applied
    if _applied is None:
        libc = _glibc()
        _applied = libc is not None and all(
            libc.mallopt(param, value) == 1
            for param, value in (
                (M_MMAP_MAX, 0),
                (M_TRIM_THRESHOLD, _NEVER_TRIM),
                (M_ARENA_MAX, 1),
            )
        )
        log.debug("glibc malloc keeps freed memory: %s", _applied)
    return _applied
