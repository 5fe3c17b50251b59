"""One-line messages stay one line whatever the libraries underneath print.

``semievol`` runs in a subprocess through ``tests/noisy_cli.py``, which makes transformers, PEFT,
torch and Python's warnings speak up during config loading and training. Bad input, a full disk
and Ctrl-C must still print exactly one line on stderr; ``-v`` must show the noise (so the noise
is real and the quiet runs could fail).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from semievol.trace import read_trace

from .conftest import sentiment_rows, write_csv
from .noisy_cli import NOISE
from .test_kill_resume import environment, write_config

NOISY_CLI = str(Path(__file__).with_name("noisy_cli.py"))


def noisy_semievol(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, NOISY_CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1", **(env or {})},
        timeout=300,
    )


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def run_config(tmp_path: Path, labeled_rows: list[dict]) -> Path:
    data = tmp_path / "data"
    paths = {
        "labeled": write_csv(data / "labeled.csv", labeled_rows),
        "unlabeled": write_csv(data / "unlabeled.csv", sentiment_rows(12, start=100)),
        "test": write_csv(data / "test.csv", sentiment_rows(6, start=200)),
    }
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "data:\n"
        + "".join(f"  {k}: '{v}'\n" for k, v in paths.items())
        + "  id_column: id\nmodel:\n  backend: dummy\n"
        + f"pipeline:\n  run_dir: '{tmp_path / 'run'}'\n"
    )
    return cfg


def test_bad_input_is_one_line_while_dependencies_warn(tmp_path):
    rows = sentiment_rows(12)
    rows[3]["answer"] = "Z"
    cfg = run_config(tmp_path, rows)
    for command in (["data", "check"], ["run"]):
        proc = noisy_semievol(*command, "--config", str(cfg))
        assert proc.returncode == 2, proc.stderr
        lines = stderr_lines(proc)
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: ") and "labeled.csv" in lines[0] and "row 4" in lines[0]
    assert not (tmp_path / "run").exists()

    # The noise is real: -v lets it through, beside the same error line.
    loud = noisy_semievol("-v", "data", "check", "--config", str(cfg))
    assert loud.returncode == 2
    noise = [line for line in stderr_lines(loud) if NOISE in line]
    assert len(noise) >= 4, loud.stderr
    assert stderr_lines(loud)[-1] == stderr_lines(proc)[-1]


def test_full_disk_is_one_line_while_dependencies_warn(tmp_path):
    cfg = run_config(tmp_path, sentiment_rows(12))
    proc = noisy_semievol("run", "--config", str(cfg), env={"NOISY_FULL_DISK": "1"})
    assert proc.returncode == 1, proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "No space left on device" in lines[0] and "run the same command again" in lines[0]


def test_ctrl_c_is_one_line_while_dependencies_warn(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    trace = tmp_path / "trace"
    cfg = write_config(tmp_path, tiny_model_dir, run, epochs=200)  # long enough to interrupt
    proc = subprocess.Popen(
        [sys.executable, NOISY_CLI, "-q", "run", "--config", str(cfg)],
        env=environment(trace),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # A shell starts background jobs with SIGINT ignored; give the child a terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if trace.exists() and any(e["event"] == "train_step" for e in read_trace(trace)):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in lines[0] and "same command" in lines[0] and str(run) in lines[0]
