"""The CLI flow above the model, on the deterministic dummy backend (no torch needed)."""

import json

import yaml

from semievol.cli import main


def test_train_then_eval_with_dummy_backend(sentiment_data, tmp_path):
    adapter = tmp_path / "sft"
    common = [
        "-q",
        "train",
        "--model.backend",
        "dummy",
        "--data.id_column",
        "id",
        "--train.val_fraction",
        "0",
    ]
    assert (
        main(
            [
                *common,
                "--data.labeled",
                str(sentiment_data["labeled"]),
                "--train.output_dir",
                str(adapter),
            ]
        )
        == 0
    )
    saved = yaml.safe_load((adapter / "semievol_config.yaml").read_text())
    assert saved["train"]["output_dir"] == str(adapter) and saved["model"]["backend"] == "dummy"

    out = tmp_path / "eval"
    assert (
        main(
            [
                "-q",
                "eval",
                "--model.backend",
                "dummy",
                "--data.id_column",
                "id",
                "--data.test",
                str(sentiment_data["test"]),
                "--eval.output_dir",
                str(out),
                "--eval.adapters",
                f"[vanilla, {adapter}]",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[str(adapter)]["accuracy"] == 1.0  # the dummy memorises its training prompts
    assert metrics["vanilla"]["accuracy"] < 1.0
    assert metrics[str(adapter)]["confusion"]["C (positive)"] == {"C (positive)": 10}


def test_eval_rejects_a_missing_adapter_before_loading(sentiment_data, tmp_path, capsys):
    rc = main(
        [
            "eval",
            "--model.backend",
            "dummy",
            "--data.test",
            str(sentiment_data["test"]),
            "--eval.adapters",
            f"[{tmp_path / 'nope'}]",
        ]
    )
    assert rc == 2
    assert "neither 'vanilla' nor an adapter directory" in capsys.readouterr().err


def test_train_without_labeled_data_is_a_clear_error(capsys):
    assert main(["train", "--model.backend", "dummy"]) == 2
    assert capsys.readouterr().err.strip() == "error: data.labeled: no file configured"


def test_free_form_eval_goes_through_generation_and_extraction(tmp_path):
    from tests.conftest import write_csv

    rows = [
        {"id": str(i), "question": f"What is {i} / 4?", "answer": f"{i / 4}"} for i in range(1, 9)
    ]
    data = write_csv(tmp_path / "num.csv", rows)
    flags = [
        "--model.backend",
        "dummy",
        "--task.type",
        "numeric",
        "--data.options_column",
        "null",
        "--data.id_column",
        "id",
    ]
    assert (
        main(
            [
                "-q",
                "train",
                *flags,
                "--data.labeled",
                str(data),
                "--train.output_dir",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "-q",
                "eval",
                *flags,
                "--data.test",
                str(data),
                "--eval.output_dir",
                str(out),
                "--eval.adapters",
                f"[vanilla, {tmp_path / 'a'}]",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[str(tmp_path / "a")]["accuracy"] == 1.0  # '0.25' kept its decimal point
    assert metrics["vanilla"]["accuracy"] == 0.0
    preds = [json.loads(x) for x in (out / "predictions_vanilla.jsonl").read_text().splitlines()]
    assert all("output" in p for p in preds)


def test_train_with_validation_split_reports_each_epoch(sentiment_data, tmp_path, capsys):
    args = [
        "train",
        "--model.backend",
        "dummy",
        "--data.id_column",
        "id",
        "--data.labeled",
        str(sentiment_data["labeled"]),
        "--train.output_dir",
        str(tmp_path / "a"),
        "--train.val_fraction",
        "0.3",
        "--train.epochs",
        "2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    # the dummy memorises what it trained on, so held-out rows are answered by chance only
    assert "epoch 1: loss 0.0000, validation accuracy" in out and "(n=9)" in out
    assert "epoch 2:" in out


def test_demo_command_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--model.backend", "dummy"]) == 0
    for split in ("labeled", "unlabeled", "test"):
        assert (out / "data" / f"{split}.csv").is_file()
    report = (out / "report.md").read_text()
    assert "| Vanilla |" in report and "| SFT |" in report and "| SemiEvol |" in report
    assert (out / "sft" / "train" / "adapter" / "semievol_config.yaml").is_file()
    assert json.loads((out / "eval" / "sft" / "metrics.json").read_text())["SFT"]["n"] == 200
    records = (out / "round1" / "select" / "pseudo_labels.jsonl").read_text().splitlines()
    assert len(records) == 300
    printed = capsys.readouterr().out
    assert "| SemiEvol |" in printed and "pseudo-labels: kept 150 of 300" in printed


def test_demo_data_splits_do_not_overlap(tmp_path):
    from semievol.data import DataConfig, find_overlap, load_splits
    from semievol.demo_data import DATA_COLUMNS, TASK, write_demo_data
    from semievol.tasks import TaskConfig, build_task

    paths = write_demo_data(tmp_path)
    task = build_task(TaskConfig(**TASK))
    data = load_splits(
        DataConfig(**{k: str(v) for k, v in paths.items()}, **DATA_COLUMNS),
        task,
        ["labeled", "unlabeled", "test"],
    )
    assert [len(data[s]) for s in ("labeled", "unlabeled", "test")] == [200, 600, 200]
    assert (
        find_overlap(data["labeled"], data["test"])
        == find_overlap(data["unlabeled"], data["test"])
        == 0
    )
    assert all(ex.audit_gold in TASK["labels"] for ex in data["unlabeled"])
    assert (
        write_demo_data(tmp_path / "again")
        and (tmp_path / "again" / "test.csv").read_text() == paths["test"].read_text()
    )
