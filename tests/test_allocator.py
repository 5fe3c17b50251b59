"""glibc malloc settings that keep freed memory in the process (backends/allocator.py)."""

import subprocess
import sys

import pytest

from semievol.backends import ModelConfig, allocator

# Each arm runs in a fresh process: the settings are process-wide and cannot be undone.
PROBE = """
import resource, sys, torch
from semievol.backends.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "on" else False
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps = []
for step in range(8):  # like training steps: 64 MiB of activations written, then freed
    before = faults()
    x = torch.ones(16 << 20)
    del x
    steps.append(faults() - before)
# the first steps lay out the heap (torch's worker threads start and allocate beside it)
print(applied, sum(steps[4:]))  # then: fresh pages every step unless the freed ones are kept
"""


def run_probe(arm: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, arm], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(allocator._glibc() is None, reason="mallopt is glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    off_applied, off_faults = run_probe("off")
    on_applied, on_faults = run_probe("on")
    # control: by default glibc unmaps the freed 64 MiB, and writing it again faults in
    # every 4 KiB page (4 x 16,384; fewer with huge pages)
    assert off_applied == "False" and off_faults > 8000
    assert on_applied == "True"
    assert on_faults < off_faults / 10


RELEASE_PROBE = """
import torch
from semievol.backends.allocator import release_freed_memory, retain_freed_memory
from semievol.resources import current_rss_mb
assert retain_freed_memory()
base = current_rss_mb()
x = torch.ones(64 << 20)  # 256 MiB
del x
kept = current_rss_mb() - base
release_freed_memory()
print(kept, current_rss_mb() - base)
"""


@pytest.mark.skipif(
    allocator._glibc() is None or not sys.platform.startswith("linux"), reason="glibc, /proc"
)
def test_kept_memory_is_handed_back_on_request():
    out = subprocess.run(
        [sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    kept, after = float(out[0]), float(out[1])
    assert kept > 200  # MiB still resident after the free...
    assert after < 50  # ...until it is released


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    # the function itself, past the once-per-process cache
    assert allocator.retain_freed_memory.__wrapped__() is False


@pytest.mark.parametrize("retain", [True, False])
def test_the_backend_applies_it_on_cpu_as_configured(tiny_model_dir, monkeypatch, retain):
    from semievol.backends import hf

    calls = []
    monkeypatch.setattr(hf, "retain_freed_memory", lambda: calls.append(1) or True)
    hf.HFBackend(ModelConfig(name=str(tiny_model_dir), device="cpu", retain_freed_memory=retain))
    assert len(calls) == int(retain)
