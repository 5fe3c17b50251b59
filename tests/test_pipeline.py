"""The SemiEvol pipeline on the dummy backend: stage caching, resume, ablations, rounds, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from semievol.backends import ModelConfig
from semievol.backends.dummy import DummyBackend
from semievol.cli import main
from semievol.config import load_config
from semievol.pipeline import run_pipeline, stage_names
from semievol.rundir import read_jsonl

from .conftest import sentiment_rows, write_csv


class RecordingBackend:
    """The dummy backend, recording every prompt it scores; optionally raises on call N."""

    def __init__(self, crash_on_call: int | None = None):
        self.inner = DummyBackend(ModelConfig(backend="dummy"))
        self.scored: list[str] = []
        self.score_calls = 0
        self.crash_on_call = crash_on_call

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def score_choices(self, prompts, choices, **kw):
        self.score_calls += 1
        if self.crash_on_call is not None and self.score_calls == self.crash_on_call:
            raise KeyboardInterrupt  # Ctrl-C in the middle of an inference stage
        self.scored.extend(self.inner.render(p) for p in prompts)
        return self.inner.score_choices(prompts, choices, **kw)


@pytest.fixture
def data(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "data"
    return {
        "labeled": str(write_csv(d / "labeled.csv", sentiment_rows(12))),
        "unlabeled": str(write_csv(d / "unlabeled.csv", sentiment_rows(30, start=100))),
        "test": str(write_csv(d / "test.csv", sentiment_rows(15, start=300))),
    }


def make_config(data: dict[str, str], run_dir: Path, **sections: dict[str, Any]):
    base: dict[str, dict[str, Any]] = {
        "data": {**data, "id_column": "id"},
        "model": {"backend": "dummy", "batch_size": 2},  # committee chunks of 8 items
        "pipeline": {"run_dir": str(run_dir)},
        # kNN-demonstration members, so the tests exercise in-context propagation.
        "committee": {"members": ["demos=knn", "demos=knn_next", "demos=none"]},
        "train": {"val_fraction": 0.0},  # the tiny labeled set is all for training
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_config(base=base)


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> RecordingBackend:
    rec = RecordingBackend()
    monkeypatch.setattr("semievol.backends.build_backend", lambda config: rec)
    return rec


def run_args(data: dict[str, str], run_dir: Path, *extra: str) -> list[str]:
    """``semievol -q run`` on the dummy backend with the fixture's labeled and unlabeled files."""
    return [
        "-q",
        "run",
        "--model.backend",
        "dummy",
        "--data.id_column",
        "id",
        "--data.labeled",
        data["labeled"],
        "--data.unlabeled",
        data["unlabeled"],
        "--pipeline.run_dir",
        str(run_dir),
        "--train.val_fraction",
        "0",
        "--committee.members",
        "[demos=knn, demos=knn_next, demos=none]",
        *extra,
    ]


def committee_prompts(rec: RecordingBackend) -> list[str]:
    return [p for p in rec.scored if "Review 1" in p and "Several attempts" not in p]


def test_full_run_writes_every_artifact(data, tmp_path, backend):
    run_dir = tmp_path / "run"
    result = run_pipeline(make_config(data, run_dir))
    assert result.executed == stage_names(make_config(data, run_dir))
    assert set(result.metrics) == {"Vanilla", "SFT", "SemiEvol"}

    records = read_jsonl(run_dir / "round1/select/pseudo_labels.jsonl")
    assert len(records) == 30
    for r in records:
        assert len(r["votes"]) == 3 and r["reason"].startswith("kept" if r["kept"] else "rejected")
        assert r["audit_correct"] == (r["answer"] == r["audit_gold"])
        assert (r["justification"] is not None) == (r["source"] == "justification")
    assert any(r["source"] == "justification" for r in records)
    kept = [r for r in records if r["kept"]]
    export = read_jsonl(run_dir / "round1/select/export/pseudo_labeled.jsonl")
    assert [e["answer"] for e in export] == [r["answer"] for r in kept]
    assert "audit_gold" not in export[0]
    chat = read_jsonl(run_dir / "round1/select/export/pseudo_labeled_chat.jsonl")
    assert chat[0]["messages"][-1] == {"role": "assistant", "content": kept[0]["answer"]}
    to_label = (run_dir / "round1/select/export/to_label.csv").read_text().splitlines()
    assert to_label[0] == "id,question,options,model_answer,score,answer"
    assert len(to_label) == 1 + 30  # active_learning=100 caps at the 30 items

    audit = json.loads((run_dir / "round1/select/audit.json").read_text())
    assert audit["all"]["n"] == 30 and audit["kept"]["n"] + audit["rejected"]["n"] == 30
    assert audit["kept"]["correct"] == sum(r["audit_correct"] for r in kept)
    assert [row["theta"] for row in audit["accuracy_vs_theta"]][-1] == 1.0
    member0 = read_jsonl(run_dir / "round1/committee/member0.jsonl")
    spec = records[0]["votes"][0]["member"]
    assert audit["by_member"][spec]["correct"] == sum(
        v["vote"] == r["audit_gold"] for v, r in zip(member0, records, strict=True)
    )
    assert "votes of member `adapter=labeler demos=knn" in (run_dir / "report.md").read_text()

    report = (run_dir / "report.md").read_text()
    for needle in ("## Data", "Committee agreement", "Selection per class", "accuracy |", "θ |"):
        assert needle in report
    assert "error reduction vs SFT" in report and "## Stage timings" in report
    # Evolve trained on labeled ∪ kept pseudo-labels.
    evolved = json.loads((run_dir / "round1/evolve/adapter/memory.json").read_text())
    assert len(evolved) == 12 + len(kept)


def test_rerun_skips_and_config_change_invalidates_downstream(data, tmp_path, backend):
    run_dir = tmp_path / "run"
    run_pipeline(make_config(data, run_dir))
    calls = backend.score_calls

    again = run_pipeline(make_config(data, run_dir))
    assert again.executed == [] and backend.score_calls == calls

    changed = run_pipeline(make_config(data, run_dir, selection={"theta": 0.3}))
    assert changed.executed == ["round1/select", "round1/evolve", "eval/round1"]

    forced = run_pipeline(make_config(data, run_dir, selection={"theta": 0.3}), force="committee")
    assert forced.executed[0] == "round1/committee"
    assert "sft/train" not in forced.executed and "round1/neighbors" not in forced.executed
    assert forced.executed[-1] == "eval/round1" and "eval/vanilla" in forced.executed


def test_changed_training_config_reruns_everything_after_sft(data, tmp_path, backend):
    run_dir = tmp_path / "run"
    run_pipeline(make_config(data, run_dir))
    changed = run_pipeline(make_config(data, run_dir, train={"learning_rate": 1e-4}))
    assert changed.executed[:2] == ["sft/train", "round1/neighbors"]
    assert "eval/vanilla" not in changed.executed  # Vanilla does not depend on training


def test_changed_prompt_format_reruns_every_stage(data, tmp_path, backend, monkeypatch):
    """A prompt change in code (not in the config) must not reuse stages computed on the old
    prompts: the stage keys carry a fingerprint of the rendered prompts."""
    from semievol.tasks import MultipleChoiceTask

    run_dir = tmp_path / "run"
    first = run_pipeline(make_config(data, run_dir))
    monkeypatch.setattr(MultipleChoiceTask, "instruction_for", lambda self, ex: "Pick a letter.")
    again = run_pipeline(make_config(data, run_dir))
    assert (
        sorted(again.executed)
        == sorted(first.executed)
        == sorted(stage_names(make_config(data, run_dir)))
    )
    assert any("Pick a letter." in prompt for prompt in backend.scored)


def test_unknown_force_stage_is_a_clear_error(data, tmp_path, backend, capsys):
    code = main(run_args(data, tmp_path / "run", "--force", "comittee"))
    err = capsys.readouterr().err
    assert code == 2 and "--force comittee: no such stage" in err and "round1/committee" in err


def test_corrupted_artifact_is_recomputed(data, tmp_path, backend):
    run_dir = tmp_path / "run"
    run_pipeline(make_config(data, run_dir))
    path = run_dir / "round1/select/pseudo_labels.jsonl"
    path.write_text(path.read_text()[:100])  # truncated by some old crash
    again = run_pipeline(make_config(data, run_dir))
    assert again.executed == ["round1/select"]
    assert len(read_jsonl(path)) == 30


def test_resume_after_crash_mid_committee_recomputes_no_finished_item(data, tmp_path, monkeypatch):
    reference = RecordingBackend()
    monkeypatch.setattr("semievol.backends.build_backend", lambda config: reference)
    run_pipeline(make_config(data, tmp_path / "reference"))

    # Committee chunks are 8 items: member 0 takes calls 1-4, the crash hits member 1's
    # second chunk, after 30 + 8 votes were written.
    crashing = RecordingBackend(crash_on_call=6)
    monkeypatch.setattr("semievol.backends.build_backend", lambda config: crashing)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(make_config(data, run_dir))
    assert len(read_jsonl(run_dir / "round1/committee/member1.jsonl")) == 8
    before = committee_prompts(crashing)
    assert len(before) == 38

    resumed = RecordingBackend()
    monkeypatch.setattr("semievol.backends.build_backend", lambda config: resumed)
    result = run_pipeline(make_config(data, run_dir))
    assert "sft/train" not in result.executed and "round1/committee" in result.executed
    after = committee_prompts(resumed)
    assert len(after) == 90 - 38
    assert not set(before) & set(after), "a finished committee item was scored again"
    # The interrupted-and-resumed run ends exactly where the uninterrupted one does.
    for rel in ("round1/select/pseudo_labels.jsonl", "eval/round1/metrics.json"):
        assert (run_dir / rel).read_text() == (tmp_path / "reference" / rel).read_text()


def test_torn_last_line_of_an_item_log_is_dropped(tmp_path):
    from semievol.rundir import ItemLog

    log = ItemLog(tmp_path / "votes.jsonl")
    log.append([{"id": "a", "vote": "A"}, {"id": "b", "vote": "B"}])
    with (tmp_path / "votes.jsonl").open("a") as f:
        f.write('{"id": "c", "vo')  # killed mid-write
    reopened = ItemLog(tmp_path / "votes.jsonl")
    assert set(reopened.records) == {"a", "b"}
    reopened.append([{"id": "c", "vote": "C"}])
    assert [r["id"] for r in read_jsonl(tmp_path / "votes.jsonl")] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("switch", "missing_stage"),
    [
        ("in_weight", "sft/train"),
        ("in_context", "round1/neighbors"),
        ("collaborative", "round1/justify"),
        ("adaptive_selection", None),
    ],
)
def test_ablation_switches_remove_their_stage(data, tmp_path, backend, switch, missing_stage):
    run_dir = tmp_path / "run"
    cfg = make_config(data, run_dir, pipeline={switch: False})
    result = run_pipeline(cfg)
    if missing_stage:
        assert missing_stage not in result.executed
    records = read_jsonl(run_dir / "round1/select/pseudo_labels.jsonl")
    prompts = committee_prompts(backend)
    if switch == "in_weight":
        assert "SFT" not in result.metrics
        assert backend.calls["train"] == 12 + sum(r["kept"] for r in records)  # evolve only
    elif switch == "in_context":
        assert backend.calls["embed"] == 0
        assert all(p.count("<user>") == 1 for p in prompts), "no demonstrations without ICP"
        assert len(records[0]["votes"]) == 1  # demo-less members collapse into one
    elif switch == "collaborative":
        assert len(records[0]["votes"]) == 1 and len(prompts) == 30
        assert {r["source"] for r in records} == {"single"}
    else:
        assert all(r["kept"] for r in records if r["answer"] is not None)
        assert {r["reason"] for r in records} == {"kept: adaptive selection is off"}


def test_rounds_over_new_unlabeled_batches(data, tmp_path, backend):
    run_dir = tmp_path / "run"
    cfg = make_config(data, run_dir, pipeline={"rounds": 2, "unlabeled_batches": True})
    result = run_pipeline(cfg)
    assert set(result.metrics) == {"Vanilla", "SFT", "SemiEvol round 1", "SemiEvol round 2"}
    first = read_jsonl(run_dir / "round1/select/pseudo_labels.jsonl")
    second = read_jsonl(run_dir / "round2/select/pseudo_labels.jsonl")
    assert len(first) == len(second) == 15 and not {r["id"] for r in first} & {
        r["id"] for r in second
    }
    # Round 2 trains on the kept pseudo-labels of both rounds.
    evolved = json.loads((run_dir / "round2/evolve/adapter/memory.json").read_text())
    kept = sum(r["kept"] for r in first + second)
    assert len(evolved) == 12 + kept
    # Round 2's committee is labeled by round 1's adapter.
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (
        manifest["stages"]["round2/neighbors"]["key"]
        != manifest["stages"]["round1/neighbors"]["key"]
    )


def test_run_command_prints_table_and_report(data, tmp_path, capsys):
    code = main(run_args(data, tmp_path / "run", "--data.test", data["test"]))
    out = capsys.readouterr().out
    assert code == 0
    assert "| SemiEvol |" in out and "round 1: kept 15 of 30 pseudo-labels (audit:" in out
    assert (tmp_path / "run" / "semievol_config.yaml").is_file()


def test_unlabeled_gold_is_never_shown_to_the_model(data, tmp_path, backend):
    run_pipeline(make_config(data, tmp_path / "run"))
    train_prompts = Counter()
    for p in backend.scored:
        train_prompts[p] += 1
    # Gold letters of unlabeled items appear nowhere as assistant turns of demonstrations:
    # every demonstration is a labeled item ("Review 0".."Review 11").
    for p in committee_prompts(backend):
        for block in p.split("<user>")[1:-1]:
            assert any(f"Review {i}:" in block for i in range(12))


def test_ctrl_c_exits_with_one_line_on_how_to_resume(data, tmp_path, monkeypatch, capsys):
    crashing = RecordingBackend(crash_on_call=2)
    monkeypatch.setattr("semievol.backends.build_backend", lambda config: crashing)
    args = run_args(data, tmp_path / "run")
    assert main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run the same command again to resume" in err[0]
    monkeypatch.setattr("semievol.backends.build_backend", lambda config: RecordingBackend())
    assert main(args) == 0
    assert "up to date, reused: sft/train, round1/neighbors" in capsys.readouterr().out


def test_overlap_between_splits_is_warned_with_counts(data, tmp_path, backend, caplog):
    import logging

    leaky = write_csv(tmp_path / "data" / "leaky_test.csv", sentiment_rows(4))  # = labeled rows
    cfg = make_config({**data, "test": str(leaky)}, tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        run_pipeline(cfg)
    assert "4 test items also appear in labeled" in caplog.text
    assert "4 test items also appear in labeled" in (tmp_path / "run/report.md").read_text()


def test_stage_cache_shares_stages_between_run_directories(data, tmp_path, backend):
    cache = tmp_path / "cache"
    first = run_pipeline(make_config(data, tmp_path / "a", pipeline={"stage_cache": str(cache)}))
    calls = backend.score_calls
    # Another run directory with a different selection: everything before select is reused
    # from the cache without a model call, select and what follows are computed.
    other = make_config(
        data, tmp_path / "b", pipeline={"stage_cache": str(cache)}, selection={"theta": 0.3}
    )
    second = run_pipeline(other)
    assert second.executed == ["round1/select", "round1/evolve", "eval/round1"]
    assert "sft/train" in second.skipped and "eval/vanilla" in second.skipped
    assert backend.score_calls > calls  # eval of the new adapter only
    assert second.metrics["SFT"] == first.metrics["SFT"]
    b_votes = (tmp_path / "b/round1/committee/member0.jsonl").read_bytes()
    assert b_votes == (tmp_path / "a/round1/committee/member0.jsonl").read_bytes()
    # A damaged cached copy is not trusted: the stage is recomputed.
    cached_sft = next(cache.glob("sft-train-*"))
    next((cached_sft / "files").rglob("memory.json")).write_text("{}")
    third = run_pipeline(make_config(data, tmp_path / "c", pipeline={"stage_cache": str(cache)}))
    assert third.executed[0] == "sft/train"


def test_neighbors_stage_runs_only_for_members_with_demonstrations(data, tmp_path, backend):
    from semievol.stages.committee import CommitteeConfig

    default = make_config(data, tmp_path / "a", committee={"members": CommitteeConfig().members})
    assert "round1/neighbors" not in stage_names(default)
    result = run_pipeline(default)
    assert result.executed == stage_names(default)
    assert not (tmp_path / "a/round1/neighbors").exists()
    with_knn = make_config(data, tmp_path / "b", committee={"members": ["demos=knn"]})
    assert "round1/neighbors" in stage_names(with_knn)
