import dataclasses
import subprocess
import sys
import time

import pytest

from semievol.config import SECTIONS, field_docs, load_config
from semievol.errors import ConfigError


def test_every_field_has_a_docstring():
    for name, cls in SECTIONS.items():
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{name}: fields without docstring: {missing}"


def test_yaml_then_flags_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\n  learning_rate: 1e-4\ndata:\n  labeled: a.csv\n")
    cfg = load_config(path, {"train.epochs": 2}, base={"train": {"epochs": 9, "batch_size": 4}})
    assert cfg.train.epochs == 2  # flag beats file beats base
    assert cfg.train.batch_size == 4
    assert cfg.train.learning_rate == 1e-4  # YAML 1.1 reads 1e-4 as a string
    assert cfg.data.labeled == "a.csv"


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("trian:\n  epochs: 3\n", {}, "unknown section 'trian'"),
        ("train:\n  epoch: 3\n", {}, "unknown setting 'epoch'"),
        ("train:\n  epochs: three\n", {}, "train.epochs: expected an integer, got 'three'"),
        ("train:\n  epochs: 0\n", {}, "epochs must be >= 1"),
        ("train:\n  learning_rate: 2\n", {}, "learning_rate must be in (0, 1)"),
        ("model:\n  dtype: float8\n", {}, "expected one of"),
        ("model:\n  trust_remote_code: maybe\n", {}, "expected true/false"),
        ("task:\n  type: label_set\n", {}, "needs `labels`"),
        ("data:\n  test_limit: -1\n", {}, "test_limit must be >= 1"),
        ("- a\n- b\n", {}, "expected a mapping of sections"),
        ("train: [1, 2]\n", {}, "expected a mapping of settings"),
        ("train:\n  epochs: [3\n", {}, "invalid YAML"),
        ("", {"train.nope": 1}, "unknown setting 'nope'"),
        ("", {"nosection.x": 1}, "--nosection.x: unknown option"),
        ("", {"eval.adapters": []}, "at least one model"),
        ("model:\n  batch_size: 0\n", {}, "batch_size must be >= 1 or 'auto'"),
        ("model:\n  batch_size: fast\n", {}, "expected an integer or 'auto', got 'fast'"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, yaml_text, overrides, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert {f.stem for f in files} >= {"fpb", "arc", "mmlu"}
    for f in files:
        load_config(f)


def test_cli_flag_error_exits_2_without_traceback():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "semievol",
            "train",
            "--train.epochs",
            "zero",
            "--model.backend",
            "dummy",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: config: train.epochs: expected an integer, got 'zero'"


def test_help_is_instant_and_imports_no_torch():
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from semievol.cli import main\ntry:\n main(['train','--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'transformers' in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    assert proc.stdout.strip().endswith("False False")
    assert "--train.learning_rate" in proc.stdout and "Peak learning rate" in proc.stdout
    assert elapsed < 10  # generous: a torch import alone takes seconds here


def test_split_validation_is_stratified_reproducible_and_disjoint():
    from semievol.data import Example
    from semievol.training import split_validation

    exs = [
        Example(str(i), f"q{i}", ["a", "b", "c"], "ABC"[i % 3] if i < 27 else "C")
        for i in range(30)
    ]
    exs.append(
        Example("solo", "q", ["a", "b", "c", "d"], "D")
    )  # a class with one example stays in train
    train, val = split_validation(exs, 0.2, seed=1)
    assert {e.id for e in train} | {e.id for e in val} == {e.id for e in exs}
    assert not {e.id for e in train} & {e.id for e in val}
    assert sorted(e.answer for e in val) == ["A", "A", "B", "B", "C", "C"]
    assert "solo" in {e.id for e in train}
    assert split_validation(exs, 0.2, seed=1) == (train, val)
    assert split_validation(exs, 0.2, seed=2) != (train, val)
    assert split_validation(exs, 0.0, seed=1) == (exs, [])
