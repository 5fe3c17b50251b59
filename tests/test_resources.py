import sys

import pytest

from semievol.rundir import RunDir


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux-only")
def test_each_stage_records_its_own_peak_rss(tmp_path):
    import numpy as np

    from semievol.backends.allocator import retain_freed_memory

    # as in a real run, where the model backend keeps freed memory for reuse: a stage must
    # still not report the memory the stage before it kept
    retain_freed_memory()
    run = RunDir(tmp_path / "run")

    def big(stage_dir):
        block = np.ones(40_000_000)  # 305 MiB
        return {"sum": float(block[:10].sum())}

    def small(stage_dir):
        return {}

    run.stage("big", {"k": 1}, big)
    run.stage("small", {"k": 2}, small)
    big_peak = run.entry("big")["peak_rss_mb"]
    small_peak = run.entry("small")["peak_rss_mb"]
    assert big_peak - small_peak > 250, (big_peak, small_peak)


def test_gpu_peak_is_absent_without_a_gpu(tmp_path):
    from semievol.resources import peak_gpu_mb

    run = RunDir(tmp_path / "run")
    run.stage("cpu", {"k": 1}, lambda stage_dir: {})
    assert peak_gpu_mb() is None
    assert run.entry("cpu")["peak_gpu_mb"] is None


def test_timings_table_has_a_gpu_column_only_when_a_stage_used_a_gpu(tmp_path):
    from semievol.report import _timings

    run = RunDir(tmp_path / "run")
    run.stage("a", {"k": 1}, lambda stage_dir: {})
    run.stage("b", {"k": 2}, lambda stage_dir: {})
    table = _timings(run, ["a", "b", "never-ran"])
    assert "GPU" not in table
    assert all(line.count("|") == 5 for line in table.splitlines()), table

    run.manifest["stages"]["b"]["peak_gpu_mb"] = 2048.0
    table = _timings(run, ["a", "b"])
    header, _, row_a, row_b, total = table.splitlines()
    assert "peak GPU MiB" in header
    assert all(line.count("|") == 6 for line in table.splitlines()), table
    assert "| 2,048 |" in row_b and "| — |" in row_a
