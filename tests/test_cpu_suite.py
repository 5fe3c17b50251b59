"""The benchmark suite's bookkeeping: run layout, tables from finished runs (dummy backend)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from semievol.pipeline import run_pipeline
from tests.test_pipeline import data, make_config  # noqa: F401  (fixture)

SPEC = importlib.util.spec_from_file_location(
    "cpu_suite", Path(__file__).resolve().parent.parent / "benchmarks/cpu_suite.py"
)
suite = importlib.util.module_from_spec(SPEC)
sys.modules["cpu_suite"] = suite  # dataclasses look their module up
SPEC.loader.exec_module(suite)


def test_headline_table_reports_each_seed_and_mean_std(data, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr("semievol.backends.build_backend", _dummy)
    root = tmp_path / "suite"
    exps = suite.experiments([0, 1])
    headline = exps[0]
    measured = {}
    for seed in (0, 1):
        for variant in headline.variants:
            out = suite.run_dir(root, headline, variant, seed)
            extra = {"selection": {"theta": 1.0}} if variant.name != "SemiEvol" else {}
            result = run_pipeline(
                make_config(data, out, train={"seed": seed}, model={"seed": seed}, **extra)
            )
            (out / "suite_run.json").write_text(json.dumps({"command": "x", "wall_seconds": 60}))
            measured[variant.name, seed] = result.metrics
    text = suite.report(root, exps, tmp_path / "out", ["--seeds", "0,1"])
    row = next(line for line in text.splitlines() if line.startswith("| SFT |"))
    sft = [measured["SemiEvol", s]["SFT"]["accuracy"] for s in (0, 1)]
    assert f"| {100 * sft[0]:.1f} | {100 * sft[1]:.1f} |" in row
    assert suite.mean_std(sft) in row
    assert "SemiEvol − SFT per seed" in text and "## Pseudo-label audit" in text
    assert (tmp_path / "out/cpu_suite.json").is_file()


def test_variant_commands_share_one_stage_cache_and_carry_the_seed(tmp_path):
    exps = {e.name: e for e in suite.experiments([3])}
    cmds = [
        suite.command(tmp_path, exp, v, s)
        for exp in exps.values()
        for v in exp.variants
        for s in exp.seeds
    ]
    assert all(str(tmp_path / "stage_cache") in c for c in cmds)
    assert all(c[c.index("--train.seed") + 1] == "3" for c in cmds)
    dirs = {str(suite.run_dir(tmp_path, e, v, 3)) for e in exps.values() for v in e.variants}
    assert len(dirs) == sum(len(e.variants) for e in exps.values())  # no two runs share a dir


def _dummy(config):
    from semievol.backends import ModelConfig
    from semievol.backends.dummy import DummyBackend

    return DummyBackend(ModelConfig(backend="dummy"))


def test_a_run_records_the_machines_matmul_rate_around_it(tmp_path, monkeypatch):
    """Wall times on drifting (virtual) machines compare only beside the matmul rate."""
    rates = iter([300.0, 250.5])
    monkeypatch.setattr(suite, "matmul_gflops", lambda dtype: next(rates))
    calls = []
    monkeypatch.setattr(suite.subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    headline = suite.experiments([0])[0]
    semievol = headline.variants[0]
    suite.execute(tmp_path, headline, semievol, 0)
    out = suite.run_dir(tmp_path, headline, semievol, 0)
    record = json.loads((out / "suite_run.json").read_text())
    assert len(calls) == 1 and record["matmul_gflops"] == [300.0, 250.5]
    # the stage-time table shows it under the wall time, and runs recorded before it did not
    # carry it show a dash
    stages = {"sft/train": {"seconds": 12.0}}
    results = {
        "headline": {
            "SemiEvol": {
                0: {"stages": stages, "wall_seconds": 60, "matmul_gflops": [300.0, 250.5]},
                1: {"stages": stages, "wall_seconds": 90, "matmul_gflops": None},
            }
        }
    }
    table = suite.stage_time_table(results)
    assert "| float32 matmul GFLOP/s, before / after | 300 / 250 | — |" in table
