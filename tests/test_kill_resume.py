"""Kill-anywhere resume: SIGKILL the pipeline inside every stage, resume, and get the same run.

The pipeline runs as ``python -m semievol run`` on a tiny random Llama with ``SEMIEVOL_TRACE``
set, so every process appends events (stage start/finish, items handed to the model, items
logged, optimizer steps) to one trace file. The harness watches the trace and SIGKILLs the
process right after a chosen event of each stage: SFT steps, embedding parts, each committee
member's chunks, justification, selection, evolve steps, each evaluation. It then resumes with
the same command and finally checks:

* the run completes, after at least 12 kills;
* no item an inference stage had logged is ever handed to the model again (trace order);
* training resumed from its checkpoint (``train_resume`` at step > 0), not from zero;
* neighbours, votes, final answers, pseudo-labels, both adapters' weights, predictions and
  metrics are identical to an uninterrupted run with the same config.

Ctrl-C (SIGINT) is tested in test_quiet_dependencies, with dependencies that warn.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from semievol.trace import read_trace

from .conftest import sentiment_rows, write_csv

MIN_KILLS = 12

# (stage folder, event, how many such events of the attempt before the kill). Attempts follow
# the pipeline's order; a target the attempt never reaches means that stage is already done.
# Every stage is killed at least once, each kind of moment (mid-computation, just after a
# logged chunk, at a stage's start and end) somewhere, and both trainings twice, so a
# checkpoint written by a resumed run is resumed too. Each attempt is a fresh process, and
# process start-up is most of this test's time.
KILL_PLAN = [
    ("sft/train", "train_step", 2),
    ("sft/train", "train_step", 3),
    ("sft/train", "stage_done", 1),
    ("round1/neighbors", "logged", 1),
    ("round1/committee/member0", "logged", 2),
    ("round1/committee/member1", "compute", 2),
    ("round1/committee/member2", "logged", 1),
    ("round1/justify", "logged", 1),
    ("round1/select", "stage_start", 1),
    ("round1/select", "stage_done", 1),
    ("round1/evolve", "train_step", 2),
    ("round1/evolve", "train_step", 3),
    ("eval/vanilla", "compute", 2),
    ("eval/sft", "logged", 1),
    ("eval/round1", "stage_start", 1),
]


def write_config(root: Path, model_dir: Path, run_dir: Path, **train: int) -> Path:
    data = root / "data"
    if not data.exists():
        write_csv(data / "labeled.csv", sentiment_rows(24))
        write_csv(data / "unlabeled.csv", sentiment_rows(40, start=100))
        write_csv(data / "test.csv", sentiment_rows(40, start=200))
    cfg = root / f"{run_dir.name}.yaml"
    train_cfg = {"epochs": 2, "batch_size": 4, "learning_rate": 0.01, "checkpoint_every": 1}
    train_cfg.update(train)
    lines = [
        "data:",
        f"  labeled: {data / 'labeled.csv'}",
        f"  unlabeled: {data / 'unlabeled.csv'}",
        f"  test: {data / 'test.csv'}",
        "model:",
        f"  name: {model_dir}",
        "  batch_size: 1",  # 4-item chunks: many kill points per stage
        "train:",
        *[f"  {k}: {v}" for k, v in train_cfg.items()],
        "  val_fraction: 0.25",
        "committee:",
        "  members: [demos=knn, demos=none temperature=1 seed=1, demos=knn_next]",
        "pipeline:",
        f"  run_dir: {run_dir}",
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def command(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "semievol", "-q", "run", "--config", str(cfg)]


def environment(trace: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SEMIEVOL_TRACE": str(trace),
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def is_target(event: dict, stage: str, kind: str) -> bool:
    if event["event"] != kind:
        return False
    where = event.get("stage") or event.get("log") or event.get("dir") or ""
    if kind in ("stage_start", "stage_done"):
        return where == stage.rsplit("/member", 1)[0]
    return f"/{stage}" in where.replace(".jsonl", "")


def stage_finished(run_dir: Path, stage: str) -> bool:
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return False
    return stage.rsplit("/member", 1)[0] in json.loads(manifest.read_text())["stages"]


def run_and_kill(cfg: Path, trace: Path, stage: str, kind: str, count: int, rng) -> str:
    """Start a run; SIGKILL it after ``count`` matching events. 'killed' or 'finished'."""
    seen = len(read_trace(trace)) if trace.exists() else 0
    proc = subprocess.Popen(
        command(cfg),
        env=environment(trace),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        events = read_trace(trace)[seen:] if trace.exists() else []
        mine = [e for e in events if e["pid"] == proc.pid and is_target(e, stage, kind)]
        if len(mine) >= count:
            time.sleep(rng.uniform(0, 0.02))  # land anywhere shortly after the event
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "killed"
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
        pytest.fail(f"run did not finish or reach {stage} {kind} in 300 s")
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, stderr
    return "finished"


def assert_no_logged_item_recomputed(trace: Path) -> int:
    logged: dict[str, set[str]] = {}
    computed = 0
    for e in read_trace(trace):
        if e["event"] == "compute":
            again = logged.get(e["log"], set()) & set(e["ids"])
            assert not again, f"{e['log']}: logged items computed again: {sorted(again)[:5]}"
            computed += len(e["ids"])
        elif e["event"] == "logged":
            logged.setdefault(e["log"], set()).update(e["ids"])
    return computed


def jsonl_by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def assert_same_results(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    for rel in ["sft/train/adapter", "round1/evolve/adapter"]:
        wa = load_file(a / rel / "adapter_model.safetensors")
        wb = load_file(b / rel / "adapter_model.safetensors")
        assert wa.keys() == wb.keys()
        assert all((wa[k] == wb[k]).all() for k in wa), f"{rel}: weights differ"
    for rel in [
        "round1/neighbors/neighbors.jsonl",
        "round1/committee/member0.jsonl",
        "round1/committee/member1.jsonl",
        "round1/committee/member2.jsonl",
        "round1/justify/finals.jsonl",
        "round1/select/pseudo_labels.jsonl",
        "eval/vanilla/predictions_Vanilla.jsonl",
        "eval/sft/predictions_SFT.jsonl",
        "eval/round1/predictions_SemiEvol.jsonl",
    ]:
        assert jsonl_by_id(a / rel) == jsonl_by_id(b / rel), rel
    for slug in ["vanilla", "sft", "round1"]:
        ma = json.loads((a / "eval" / slug / "metrics.json").read_text())
        mb = json.loads((b / "eval" / slug / "metrics.json").read_text())
        assert ma == mb, slug


def test_kill_anywhere_and_resume_gives_the_uninterrupted_run(tiny_model_dir, tmp_path):
    rng = random.Random(0)
    reference = tmp_path / "reference"
    ref_trace = tmp_path / "reference.trace"
    subprocess.run(
        command(write_config(tmp_path, tiny_model_dir, reference)),
        env=environment(ref_trace),
        check=True,
        capture_output=True,
    )
    uninterrupted_items = assert_no_logged_item_recomputed(ref_trace)
    justify_calls = [e for e in read_trace(ref_trace) if "/justify/" in e.get("log", "")]
    assert justify_calls, "the committee never disagreed: justification is not exercised"

    killed = tmp_path / "killed"
    trace = tmp_path / "killed.trace"
    cfg = write_config(tmp_path, tiny_model_dir, killed)
    outcomes = []
    for stage, kind, count in KILL_PLAN:
        if stage_finished(killed, stage):  # an earlier kill landed after this stage had ended
            outcomes.append((stage, kind, "stage already done"))
            continue
        outcomes.append((stage, kind, run_and_kill(cfg, trace, stage, kind, count, rng)))
    outcomes.append(("(resume)", "", run_and_kill(cfg, trace, "-", "never", 1, rng)))
    kills = sum(o[2] == "killed" for o in outcomes)
    attempts = sum(o[2] != "stage already done" for o in outcomes)
    print(f"\nkill-anywhere: {kills} SIGKILLs in {attempts} runs, then the run completed")
    for stage, kind, outcome in outcomes:
        print(f"  {stage:28s} {kind:12s} {outcome}")
    assert outcomes[-1][2] == "finished"
    assert kills >= MIN_KILLS, outcomes

    # Killed items may be computed twice (they were never logged); logged ones never.
    computed = assert_no_logged_item_recomputed(trace)
    assert computed >= uninterrupted_items
    resumes = [e for e in read_trace(trace) if e["event"] == "train_resume"]
    assert any("/sft/train/" in e["dir"] and e["step"] > 0 for e in resumes), resumes
    assert any("/round1/evolve/" in e["dir"] and e["step"] > 0 for e in resumes), resumes
    assert_same_results(reference, killed)
