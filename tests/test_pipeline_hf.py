"""The pipeline on a tiny random Llama through the real HF/PEFT backend (seconds)."""

from __future__ import annotations

import json

import pytest

from semievol.config import load_config
from semievol.pipeline import run_pipeline
from semievol.rundir import read_jsonl

from .conftest import sentiment_rows, write_csv

pytest.importorskip("peft")


@pytest.mark.parametrize("task_type", ["multiple_choice", "free_form"])
def test_pipeline_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path, task_type, monkeypatch):
    d = tmp_path / "data"
    paths = {
        "labeled": str(write_csv(d / "labeled.csv", sentiment_rows(12))),
        "unlabeled": str(write_csv(d / "unlabeled.csv", sentiment_rows(10, start=100))),
        "test": str(write_csv(d / "test.csv", sentiment_rows(6, start=300))),
    }
    rows = sentiment_rows(12)
    if task_type == "free_form":  # answers as words: generation, extraction and NLL scores
        for split, n, start in (("labeled", 12, 0), ("unlabeled", 10, 100), ("test", 6, 300)):
            rows = sentiment_rows(n, start=start)
            for r in rows:
                r["answer"] = {"A": "bad", "B": "fine", "C": "good"}[r["answer"]]
                r.pop("options")
            paths[split] = str(write_csv(d / f"{split}_ff.csv", rows))
    cfg = load_config(
        base={
            "data": {**paths, "id_column": "id"},
            "task": {"type": task_type},
            "model": {"name": str(tiny_model_dir), "batch_size": 4},
            "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3},
            "committee": {
                "members": [
                    "demos=knn",
                    "adapter=base demos=knn_reversed",
                    "demos=none temperature=1 seed=3",
                ],
                "max_new_tokens": 4,
            },
            "eval": {"max_new_tokens": 4},
            "pipeline": {"run_dir": str(tmp_path / "run")},
        }
    )
    result = run_pipeline(cfg)
    assert set(result.metrics) == {"Vanilla", "SFT", "SemiEvol"}
    records = read_jsonl(tmp_path / "run/round1/select/pseudo_labels.jsonl")
    assert len(records) == 10 and all(len(r["votes"]) == 3 for r in records)
    kind = "entropy" if task_type == "multiple_choice" else "mean_nll"
    assert {r["score_kind"] for r in records} == {kind}
    assert (tmp_path / "run/round1/evolve/adapter/adapter_model.safetensors").is_file()
    assert (tmp_path / "run/round1/neighbors/embeddings_unlabeled.npy").is_file()
    if task_type == "free_form":
        assert all("output" in v for r in records for v in r["votes"])

    # A second invocation reuses everything, including the adapters, without loading the model.
    def no_model(config):
        raise AssertionError("the model was loaded although every stage was up to date")

    monkeypatch.setattr("semievol.backends.build_backend", no_model)
    again = run_pipeline(cfg)
    assert again.executed == [] and again.metrics == result.metrics
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert all(entry["files"] for entry in manifest["stages"].values())
