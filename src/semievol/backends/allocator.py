"""Keep the memory torch frees inside the process (glibc malloc settings), for CPU work.

A training step allocates its activations and frees them all at the end; the next step
allocates them again. By default glibc hands large freed blocks straight back to the kernel:
blocks above its mmap threshold are unmapped, the top of the heap is trimmed, and a worker
thread's arena is unmapped once it empties. Every step then touches hundreds of megabytes of
fresh pages, and each 4 KiB page costs a page fault and a zeroing by the kernel (in a virtual
machine, often by the host too). In the A/B of BENCHMARKS.md (issue 5, session 12), a
128-row training epoch on the 2-core development VM took 0.23-1.35 million page faults and
2.6-12.6 s of system time by default, 0.13-0.26 million and 1.7-3.2 s with these settings,
and ran 1.01-1.17x as fast with them.

Three ``mallopt`` settings keep the memory for reuse instead: no mmap for large blocks, no
trimming of the heap, and one arena, so blocks freed by torch's worker threads land in the
same heap as the rest. The price: the resident size stays at its peak until the memory is
handed back explicitly: ``release_freed_memory`` does that (``malloc_trim``), and every
pipeline stage calls it when it starts, so a stage neither holds nor reports the memory of
the one before. Only glibc has these functions; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_NEVER_TRIM = -1  # glibc reads it as the largest size: the heap top is never trimmed


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # gnu_get_libc_version exists only in glibc; musl and others have no mallopt semantics
    names = ("gnu_get_libc_version", "mallopt", "malloc_trim")
    return libc if all(hasattr(libc, name) for name in names) else None


def release_freed_memory() -> None:
    """Hand the memory freed so far back to the kernel (any allocator settings)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def retain_freed_memory() -> bool:
    """Apply the settings once per process; returns whether they are in effect."""
    libc = _glibc()
    applied = libc is not None and all(
        libc.mallopt(param, value) == 1
        for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _NEVER_TRIM), (M_ARENA_MAX, 1))
    )
    log.debug("glibc malloc keeps freed memory: %s", applied)
    return applied
