"""benchmarks/perf.py end to end on the tiny random model (seconds): every figure is produced."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from .conftest import sentiment_rows, write_csv

SPEC = importlib.util.spec_from_file_location(
    "perf_bench", Path(__file__).resolve().parent.parent / "benchmarks/perf.py"
)
perf = importlib.util.module_from_spec(SPEC)
sys.modules["perf_bench"] = perf
SPEC.loader.exec_module(perf)


def test_perf_benchmark_reports_speed_accuracy_floor_and_memory(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    cfg = tmp_path / "perf.yaml"
    cfg.write_text(
        "data:\n"
        f"  labeled: {write_csv(data / 'labeled.csv', sentiment_rows(12))}\n"
        f"  unlabeled: {write_csv(data / 'unlabeled.csv', sentiment_rows(12, start=50))}\n"
        "  id_column: id\n"
        f"model:\n  name: {tiny_model_dir}\n  batch_size: 4\n"
    )
    out = tmp_path / "perf.json"
    args = ["--config", str(cfg), "--items", "6", "--full-items", "12", "--train-examples", "8"]
    args += ["--batch-sweep", "2,4"]
    assert perf.main([*args, "--naive-max-new-tokens", "4", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("naive", "semievol", "semievol_full"):
        assert 0.0 <= r[key]["accuracy"] <= 1.0
        assert r[key]["items_per_second"] > 0
        assert r[key]["tokens_per_second"] > r[key]["items_per_second"]
    assert r["naive"]["engine_loads"] == 5
    # work the backend counted: prompts for both, decode steps for the naive reference (random
    # weights never stop within 4 tokens)
    naive, ours = r["naive"]["positions_computed"], r["semievol"]["positions_computed"]
    assert naive["prompt"] > 0 and naive["generated"] > 0 and ours["prompt"] > 0
    work_ratio = f"{sum(naive.values()) / sum(ours.values()):.1f}×"
    assert r["matmul_device"] == "cpu" and r["matmul_gflops"]["float32"] > 0
    assert set(r["batch_sweep"]) == {"2", "4"}
    assert r["semievol"]["forward_passes_per_item"] == 1  # three members, one shared pass
    assert r["semievol"]["fraction_of_floor"] > 0 and r["training"]["fraction_of_floor"] > 0
    assert r["parameters"]["body"] < r["parameters"]["total"]
    assert all(p["peak_rss_mb"] for p in r["phases"].values())
    assert all(p["peak_gpu_mb"] is None for p in r["phases"].values())  # no GPU here
    printed = capsys.readouterr().out
    assert "speed-up on the same items" in printed and "training:" in printed
    assert f"padding included): {work_ratio}" in printed


def test_memory_probe_reports_peak_per_batch_size(tiny_model_dir, tmp_path):
    cfg = tmp_path / "perf.yaml"
    cfg.write_text(
        "data:\n"
        f"  labeled: {write_csv(tmp_path / 'labeled.csv', sentiment_rows(4))}\n"
        f"  unlabeled: {write_csv(tmp_path / 'unlabeled.csv', sentiment_rows(4, start=50))}\n"
        "  id_column: id\n"
        f"model:\n  name: {tiny_model_dir}\n  batch_size: 4\n"
    )
    out = tmp_path / "mem.json"
    assert perf.main(["--config", str(cfg), "--memory-probe", "--out", str(out)]) == 0
    mem = json.loads(out.read_text())["training_memory"]
    assert list(mem["peak_above_rest_mib_by_rows"]) == ["2", "4", "8", "16"]
    assert all(v >= 0 for v in mem["peak_above_rest_mib_by_rows"].values())
    assert "mib_per_token" in mem and "kib_per_token_per_layer" in mem


RANDOM_SPEC = importlib.util.spec_from_file_location(
    "random_model", Path(__file__).resolve().parent.parent / "benchmarks/random_model.py"
)
random_model = importlib.util.module_from_spec(RANDOM_SPEC)
RANDOM_SPEC.loader.exec_module(random_model)


def test_random_model_of_a_preset_architecture_loads_and_scores(tiny_model_dir, tmp_path):
    """benchmarks/random_model.py: the preset's shapes, safetensors weights, the tokenizer's
    vocabulary; semievol loads the directory like any local model."""
    from semievol.backends import ModelConfig
    from semievol.backends.hf import HFBackend

    out = tmp_path / "random"
    assert random_model.main(["tiny", str(out), "--tokenizer", str(tiny_model_dir)]) == 0
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    config = json.loads((out / "config.json").read_text())
    model_type, dims = random_model.PRESETS["tiny"]
    assert config["model_type"] == model_type
    assert {k: config[k] for k in dims} == dims
    backend = HFBackend(ModelConfig(name=str(out), batch_size=2))
    assert backend.model.config.vocab_size == len(backend.tokenizer)
    probs = backend.score_choices(
        [[{"role": "user", "content": "Sales fell."}]] * 3, [["A", "B", "C"]] * 3, progress=False
    )
    assert all(abs(sum(p) - 1) < 1e-5 for p in probs)
    with pytest.raises(SystemExit, match="unknown ARCH"):
        random_model.main(["gpt-9", str(tmp_path / "x"), "--tokenizer", str(tiny_model_dir)])
