import sys

import pytest

from semievol.rundir import RunDir


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux-only")
def test_each_stage_records_its_own_peak_rss(tmp_path):
    import numpy as np

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
