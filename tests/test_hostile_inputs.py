"""Hostile input corpus, end to end through ``semievol run`` (dummy backend, in-process).

Every case must give one clear error naming what is wrong (file, row and column where they
apply), exit code 2, no traceback, and leave no run directory behind. Leakage between splits is
a warning with counts, not an error. Secrets never reach configs, run directories or logs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from semievol.cli import main

from .conftest import sentiment_rows, write_csv
from .test_data import MALFORMED

OPTS = json.dumps(["negative", "neutral", "positive"]).replace('"', '""')
HEADER = "id,question,options,answer\n"


def good_data(root: Path) -> dict[str, Path]:
    return {
        "labeled": write_csv(root / "labeled.csv", sentiment_rows(12)),
        "unlabeled": write_csv(root / "unlabeled.csv", sentiment_rows(12, start=100)),
        "test": write_csv(root / "test.csv", sentiment_rows(6, start=200)),
    }


def run_cli(tmp_path: Path, capsys, yaml_text: str = "", flags=(), **paths: Path | str):
    data = {**good_data(tmp_path / "data"), **paths}
    cfg = tmp_path / "config.yaml"
    base = (
        "data:\n"
        + "".join(f"  {k}: '{v}'\n" for k, v in data.items())
        + "  id_column: id\n"
        + "model:\n  backend: dummy\n"
        + f"pipeline:\n  run_dir: '{tmp_path / 'run'}'\n"
    )
    cfg.write_text(base + yaml_text)
    rc = main(["-q", "run", "--config", str(cfg), *flags])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_failure(tmp_path: Path, rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "run").exists(), "bad input left a run directory behind"


# --- 28 malformed data files (shared with test_data), as the labeled split of a run --------------


@pytest.mark.parametrize(
    ("name", "content", "row", "column", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_labeled_file_fails_the_run_cleanly(
    tmp_path, capsys, name, content, row, column, message
):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    rc, _, err = run_cli(tmp_path, capsys, labeled=path)
    fragments = [str(path), message]
    if row is not None:
        fragments.append(f"row {row}")
    if column is not None:
        fragments.append(f"column {column!r}")
    assert_clean_failure(tmp_path, rc, err, *fragments)
    assert len(err.strip().splitlines()) == 1, err


# --- more hostile data: other splits, encodings, sizes, file-system surprises -----------------


def _csv(tmp_path: Path, name: str, body: str, header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


DATA_CASES = {
    "unlabeled_renamed_question_column": lambda t: (
        {"unlabeled": _csv(t, "u.csv", f'1,hi,"{OPTS}",A\n', "id,text,options,answer\n")},
        ["u.csv", "missing column 'question'"],
    ),
    "test_answer_not_among_options": lambda t: (
        {"test": _csv(t, "t.csv", f'1,hi,"{OPTS}",E\n')},
        ["t.csv", "row 1", "column 'answer'", "'E' is not one of the 3 options"],
    ),
    "unlabeled_empty_file": lambda t: (
        {"unlabeled": _csv(t, "u.csv", "", header="")},
        ["u.csv", "file is empty"],
    ),
    "labeled_is_a_directory": lambda t: ({"labeled": t}, [str(t), "is a directory"]),
    "labeled_missing": lambda t: ({"labeled": t / "nope.csv"}, ["nope.csv", "file not found"]),
    "huge_field": lambda t: (
        {"labeled": _csv(t, "huge.csv", f'1,{"x" * 300_000},"{OPTS}",A\n')},
        ["huge.csv", "field larger than field limit"],
    ),
    "nul_byte_in_question": lambda t: (
        {"labeled": _csv(t, "nul.csv", f'1,h\x00i,"{OPTS}",A\n')},
        ["nul.csv", "row 1", "column 'question'", "NUL byte"],
    ),
    "utf16_file": lambda t: (
        {"labeled": _write_bytes(t / "u16.csv", (HEADER + f'1,hi,"{OPTS}",A\n').encode("utf-16"))},
        ["u16.csv", "not valid UTF-8"],
    ),
    "jsonl_answer_is_a_list": lambda t: (
        {
            "labeled": _write_bytes(
                t / "l.jsonl",
                b'{"id": "1", "question": "q", "options": ["a", "b"], "answer": ["A"]}\n',
            )
        },
        ["l.jsonl", "row 1", "column 'answer'", "expected text, got a list"],
    ),
    "duplicate_ids_in_unlabeled": lambda t: (
        {"unlabeled": _csv(t, "u.csv", f'7,hi,"{OPTS}",A\n7,ho,"{OPTS}",B\n')},
        ["u.csv", "row 2", "duplicate id '7'"],
    ),
    "question_column_mapped_to_nothing": lambda t: (
        {"flags": ("--data.question_column", "text")},
        ["labeled.csv", "missing column 'text'"],
    ),
}


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_hostile_data_fails_the_run_cleanly(tmp_path, capsys, case):
    paths, fragments = DATA_CASES[case](tmp_path)
    flags = paths.pop("flags", ())
    rc, _, err = run_cli(tmp_path, capsys, flags=flags, **paths)
    assert_clean_failure(tmp_path, rc, err, *fragments)


def test_unreadable_file_fails_the_run_cleanly(tmp_path, capsys, monkeypatch):
    locked = _csv(tmp_path, "locked.csv", f'1,hi,"{OPTS}",A\n')
    if os.geteuid() == 0:  # root reads anything: simulate the refusal others would get
        real_access = os.access
        monkeypatch.setattr(
            "semievol.data.os.access",
            lambda p, mode: False if str(p) == str(locked) else real_access(p, mode),
        )
    else:
        locked.chmod(0)
    rc, _, err = run_cli(tmp_path, capsys, labeled=locked)
    assert_clean_failure(tmp_path, rc, err, "locked.csv", "permission denied")


# --- hostile configs ------------------------------------------------------------------------

CONFIG_CASES = [
    ("unknown_key", "train:\n  epoch: 3\n", (), "unknown setting 'epoch'"),
    ("unknown_section", "trian:\n  epochs: 3\n", (), "unknown section 'trian'"),
    ("wrong_type", "train:\n  epochs: three\n", (), "train.epochs: expected an integer"),
    ("theta_above_1", "selection:\n  theta: 1.5\n", (), "theta"),
    ("theta_zero", "selection:\n  theta: 0\n", (), "theta"),
    ("no_committee", "committee:\n  members: []\n", (), "members"),
    ("bad_member_spec", "committee:\n  members: [demos=sideways]\n", (), "demos"),
    ("k_zero", "in_context:\n  k: 0\n", (), "k must be >= 1"),
    ("bad_flag_value", "", ("--train.learning_rate", "fast"), "train.learning_rate"),
    ("force_unknown_stage", "", ("--force", "warp"), "--force warp: no such stage"),
    ("yaml_list", "- a\n", (), "expected a mapping"),
    ("secret_in_yaml", "model:\n  api_key: sk-live-4242\n", (), "environment variables"),
]


@pytest.mark.parametrize(
    ("case", "yaml_text", "flags", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES]
)
def test_hostile_config_fails_the_run_cleanly(tmp_path, capsys, case, yaml_text, flags, message):
    if case == "yaml_list":  # replaces the whole file
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml_text)
        rc = main(["-q", "run", "--config", str(cfg)])
        err = capsys.readouterr().err
    else:
        rc, _, err = run_cli(tmp_path, capsys, yaml_text, flags)
    assert_clean_failure(tmp_path, rc, err, message)
    assert "sk-live-4242" not in err  # a secret is never echoed back


def test_corpus_has_at_least_40_hostile_inputs():
    assert len(MALFORMED) + len(DATA_CASES) + 1 + len(CONFIG_CASES) >= 40


# --- warnings, not errors -------------------------------------------------------------------


def test_leakage_between_splits_is_a_warning_with_counts(tmp_path, capsys, caplog):
    data = tmp_path / "leaky"
    rows = sentiment_rows(12)
    paths = {
        "labeled": write_csv(data / "labeled.csv", rows),
        "unlabeled": write_csv(data / "unlabeled.csv", rows[:5] + sentiment_rows(7, start=100)),
        "test": write_csv(data / "test.csv", rows[:3] + sentiment_rows(3, start=200)),
    }
    rc, _, err = run_cli(tmp_path, capsys, **paths)
    assert rc == 0, err
    assert "5 unlabeled items also appear in labeled" in caplog.text
    assert "3 test items also appear in labeled" in caplog.text
    assert (tmp_path / "run" / "report.md").is_file()


# --- secrets --------------------------------------------------------------------------------


def test_secrets_in_the_environment_never_reach_run_dirs_or_logs(
    tmp_path, capsys, monkeypatch, caplog
):
    secrets = {"HF_TOKEN": "hf_s3cr3t_token_xyz", "OPENAI_API_KEY": "sk-s3cr3t-key-xyz"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    rc = main(
        [
            "run",  # not quiet: info logs too
            "--config",
            str(_full_config(tmp_path)),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) > 10
    for value in secrets.values():
        assert value not in out and value not in err and value not in caplog.text
        for p in files:
            assert value.encode() not in p.read_bytes(), p


def _full_config(tmp_path: Path) -> Path:
    data = good_data(tmp_path / "data")
    cfg = tmp_path / "full.yaml"
    cfg.write_text(
        "data:\n"
        + "".join(f"  {k}: '{v}'\n" for k, v in data.items())
        + "  id_column: id\nmodel:\n  backend: dummy\n"
        + f"pipeline:\n  run_dir: '{tmp_path / 'run'}'\n"
    )
    return cfg
