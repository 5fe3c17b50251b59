"""Stage logic in isolation: neighbours, committee members, justification, selection rules."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from semievol.backends import ModelConfig
from semievol.backends.dummy import DummyBackend
from semievol.data import Example
from semievol.stages.committee import (
    CommitteeConfig,
    Member,
    committee_members,
    demonstrations,
    parse_member,
    sample_vote,
)
from semievol.stages.in_context import nearest_neighbors
from semievol.stages.justify import justification_messages, resolve_committee
from semievol.stages.selection import SelectionConfig, select_pseudo_labels
from semievol.tasks import TaskConfig, build_task

# --- in-context propagation --------------------------------------------------------------------


def unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_nearest_neighbors_on_a_constructed_example():
    keys = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1), unit(1, 1, 0), unit(1, 0, 0)])
    queries = np.stack([unit(1, 0.1, 0), unit(0, 0, 1), unit(0, 1, 1)])
    idx, sims = nearest_neighbors(queries, keys, 3)
    # Query 0 is closest to keys 0 and 4 (identical vectors: the lower index first), then 3.
    assert idx[0].tolist() == [0, 4, 3]
    assert idx[1].tolist()[0] == 2 and sims[1][0] == pytest.approx(1.0)
    assert idx[2].tolist()[:2] == [1, 2]  # a tie between keys 1 and 2, lower index first
    assert np.all(np.diff(sims, axis=1) <= 1e-7)  # most similar first
    brute = [sorted(range(5), key=lambda j: (-float(q @ keys[j]), j))[:3] for q in queries]
    assert idx.tolist() == brute


def test_nearest_neighbors_with_fewer_keys_than_k():
    idx, sims = nearest_neighbors(np.stack([unit(1, 0)]), np.stack([unit(0, 1), unit(1, 0)]), 5)
    assert idx.tolist() == [[1, 0]] and sims.shape == (1, 2)


def ex(i: int, answer: str | None = "A") -> Example:
    return Example(f"l{i}", f"question {i}", ["x", "y", "z"], answer)


def test_demonstrations_are_nearest_last_and_members_really_differ():
    labeled = {f"l{i}": ex(i) for i in range(6)}
    neighbors = {"u": ["l3", "l1", "l4", "l0", "l5", "l2"]}  # nearest first
    item = Example("u", "new question", ["x", "y", "z"])

    def ids(demos: str, seed: int = 0) -> list[str]:
        demo = demonstrations(Member(demos=demos, seed=seed), item, 3, neighbors, labeled)
        return [d.id for d in demo]

    assert ids("knn") == ["l4", "l1", "l3"]  # the most similar sits right before the question
    assert ids("knn_reversed") == ["l3", "l1", "l4"]
    assert ids("knn_next") == ["l2", "l5", "l0"]
    assert ids("none") == []
    assert len(set(ids("random"))) == 3 and ids("random") == ids("random")
    assert ids("random", seed=1) != ids("random") or ids("random", seed=2) != ids("random")


def test_member_specs_parse_and_bad_ones_say_what_is_wrong():
    m = parse_member("adapter=sft demos=knn_next temperature=0.7 seed=3")
    assert m == Member("sft", "knn_next", 0.7, 3)
    for bad, message in [
        ("demos=nearest", "demos must be one of"),
        ("temperature=hot", "temperature must be a number"),
        ("seed=1.5", "seed must be an integer"),
        ("colour=red", "unknown key 'colour'"),
        ("adapter", "expected key=value"),
        ("demos=knn demos=none", "demos given twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_member(bad)
    with pytest.raises(ValueError, match="at least one"):
        CommitteeConfig(members=[])


def test_ablations_shape_the_committee():
    cfg = CommitteeConfig(members=["demos=knn", "demos=knn_next", "demos=none temperature=1"])
    assert len(committee_members(cfg, in_context=True, collaborative=True)) == 3
    assert committee_members(cfg, in_context=True, collaborative=False) == [Member(demos="knn")]
    no_icl = committee_members(cfg, in_context=False, collaborative=True)
    assert no_icl == [Member(), Member(temperature=1.0)]


def test_sampled_votes_follow_the_tempered_distribution():
    import random

    rng = random.Random(0)
    counts = [0, 0]
    for _ in range(4000):
        counts[sample_vote([0.8, 0.2], 1.0, rng)] += 1
    assert counts[0] / 4000 == pytest.approx(0.8, abs=0.03)
    sharp = sum(sample_vote([0.8, 0.2], 0.1, rng) == 0 for _ in range(500))
    assert sharp == 500


def test_free_form_members_sharing_a_prompt_generate_together_and_resume(tmp_path):
    from semievol.stages.committee import collect_votes

    task = build_task(TaskConfig(type="free_form"))
    items = [Example(f"u{i}", f"What is {i}?", None) for i in range(5)]
    labeled = [Example("l0", "What is 9?", None, "nine")]
    members = [
        Member(),
        Member(temperature=1.0, seed=1),
        Member(demos="knn"),
        Member(temperature=1.0, seed=2),
    ]
    backend = DummyBackend(ModelConfig(backend="dummy"))

    def collect():
        return collect_votes(
            backend,
            task,
            items,
            members,
            demos_for=lambda m, ex: labeled if m.demos == "knn" else [],
            adapter_for=lambda m: None,
            stage_dir=tmp_path,
            chunk_size=2,
            max_new_tokens=8,
        )

    logs = collect()
    # members 0, 1 and 3 see the same prompts: one call for them, one for the knn member
    assert backend.calls["generate"] == 2 * len(items)
    for m, log in zip(members, logs, strict=True):
        demos = labeled if m.demos == "knn" else []
        prompts = [task.messages(ex, demos, inline_demos=True) for ex in items]
        alone = DummyBackend(ModelConfig(backend="dummy")).generate(prompts, samplings=[m.sampling])
        assert [log.records[ex.id]["output"] for ex in items] == [g.text for (g,) in alone]
    assert len({log.records["u0"]["mean_nll"] for log in logs}) > 1  # members really differ
    # a crash lost member 3's last items: only those items are generated again
    path = tmp_path / "member3.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:3]))
    before = {i: dict(log.records) for i, log in enumerate(logs)}
    logs = collect()
    assert backend.calls["generate"] == 2 * len(items) + 2
    assert {i: log.records for i, log in enumerate(logs)} == before


def test_committee_and_justification_chunks_hold_prompts_of_similar_length(tmp_path):
    from semievol.stages.committee import collect_votes

    task = build_task(TaskConfig(type="multiple_choice"))
    lengths = [7, 1, 12, 3, 9, 2, 5, 11]
    items = [Example(f"u{i}", "word " * n, ["x", "y", "z"]) for i, n in enumerate(lengths)]
    backend = DummyBackend(ModelConfig(backend="dummy"))
    seen: list[list[int]] = []
    score = backend.score_choices

    def spy(prompts, choices, **kw):
        seen.append([p[-1]["content"].count("word") for p in prompts])
        return score(prompts, choices, **kw)

    backend.score_choices = spy  # type: ignore[method-assign]
    members = [Member(), Member(temperature=5.0, seed=1)]
    logs = collect_votes(
        backend,
        task,
        items,
        members,
        demos_for=lambda m, ex: [],
        adapter_for=lambda m: None,
        stage_dir=tmp_path / "committee",
        chunk_size=3,
        max_new_tokens=8,
    )
    assert seen[:3] == [[1, 2, 3], [5, 7, 9], [11, 12]]  # shortest first, chunk by chunk
    seen.clear()
    resolve_committee(
        backend,
        task,
        items,
        [log.records for log in logs],
        justify=True,
        labeler=None,
        stage_dir=tmp_path / "justify",
        chunk_size=2,
        max_new_tokens=8,
    )
    flat = [n for call in seen for n in call]
    assert flat and flat == sorted(flat)


# --- self-justification ------------------------------------------------------------------------

TASKS = {
    "multiple_choice": (
        TaskConfig(type="multiple_choice"),
        ["A", "C", "A"],
        ["red", "green", "blue"],
    ),
    "label_set": (
        TaskConfig(type="label_set", labels=["negative", "neutral", "positive"]),
        ["negative", "positive", "positive"],
        None,
    ),
    "numeric": (TaskConfig(type="numeric"), ["12", "12.5", "13"], None),
    "free_form": (TaskConfig(type="free_form"), ["Paris", "Lyon", "Paris"], None),
}


@pytest.mark.parametrize("kind", list(TASKS))
def test_justification_prompt_shows_every_candidate_for_each_task_type(kind):
    cfg, answers, options = TASKS[kind]
    task = build_task(cfg)
    item = Example("u1", "What is it?", options)
    votes = [{"id": "u1", "vote": a, "output": f"I think {a}"} for a in answers]
    from semievol.stages.justify import describe_candidate

    msgs = justification_messages(task, item, [describe_candidate(task, item, v) for v in votes])
    user = msgs[-1]["content"]
    assert user.startswith(task.messages(item)[-1]["content"])
    for i, a in enumerate(answers, start=1):
        assert f"Answer {i}: {a}" in user
    if kind == "multiple_choice":
        assert "Answer 2: C. blue" in user
    else:
        assert 'reasoning: "I think 12.5"' in user or kind != "numeric"


@pytest.mark.parametrize("kind", list(TASKS))
def test_only_disagreements_are_justified_for_each_task_type(kind, tmp_path):
    cfg, answers, options = TASKS[kind]
    task = build_task(cfg)
    items = [Example("agree", "Q1?", options), Example("split", "Q2?", options)]
    closed = task.choices(items[0]) is not None
    votes = []
    for m, a in enumerate(answers):
        per_item = {}
        for it in items:
            vote = answers[0] if it.id == "agree" else a
            rec = {"id": it.id, "vote": vote}
            if closed:
                choices = task.choice_answers(it)
                rec["distribution"] = {
                    c: (0.6 if c == vote else 0.4 / (len(choices) - 1)) for c in choices
                }
            else:
                rec["output"] = vote
                rec["mean_nll"] = 0.1 * (m + 1)
            per_item[it.id] = rec
        votes.append(per_item)
    backend = DummyBackend(ModelConfig(backend="dummy"))

    def resolve() -> list[dict]:
        return resolve_committee(
            backend,
            task,
            items,
            votes,
            justify=True,
            labeler=None,
            stage_dir=tmp_path,
            chunk_size=8,
            max_new_tokens=16,
        )

    finals = resolve()
    used = backend.calls["score_choices" if closed else "generate"]
    assert used == 1  # one pass, for the disputed item only
    agree, split = finals
    assert agree["source"] == "unanimous" and agree["answer"] == answers[0]
    assert split["source"] in ("justification", "majority (justification gave no answer)")
    assert "justification" in split and math.isfinite(split["score"])
    if closed:
        assert split["answer"] in task.choice_answers(items[1])
    # Resuming finds the justification in its log and makes no new call.
    again = resolve()
    assert again == finals and backend.calls["score_choices" if closed else "generate"] == 1


def test_majority_vote_without_justification_breaks_ties_by_confidence(tmp_path):
    task = build_task(TaskConfig(type="multiple_choice"))
    item = Example("u", "Q?", ["a", "b", "c"])
    dists = [{"A": 0.5, "B": 0.3, "C": 0.2}, {"A": 0.1, "B": 0.8, "C": 0.1}]
    votes = [{"u": {"id": "u", "vote": max(d, key=d.get), "distribution": d}} for d in dists]
    (final,) = resolve_committee(
        None,
        task,
        [item],
        votes,
        justify=False,
        labeler=None,
        stage_dir=tmp_path,
        chunk_size=8,
        max_new_tokens=8,
    )
    assert final["answer"] == "B" and final["source"] == "majority"
    mean = [0.3, 0.55, 0.15]
    assert final["score"] == pytest.approx(-sum(p * math.log(p) for p in mean))


# --- adaptive selection ------------------------------------------------------------------------


def finals_for(scores: dict[str, tuple[str | None, float]]) -> list[dict]:
    return [{"id": i, "answer": a, "score": s} for i, (a, s) in scores.items()]


FINALS = finals_for(
    {
        "n1": ("neutral", 0.01),
        "n2": ("neutral", 0.02),
        "n3": ("neutral", 0.03),
        "n4": ("neutral", 0.04),
        "n5": ("neutral", 0.05),
        "n6": ("neutral", 0.06),
        "p1": ("positive", 0.30),
        "p2": ("positive", 0.40),
        "g1": ("negative", 0.90),
        "g2": ("negative", 0.95),
        "x": (None, math.inf),
    }
)


def kept(decisions) -> set[str]:
    return {i for i, d in decisions.items() if d.kept}


def test_percentile_selection_keeps_the_most_confident_fraction():
    d = select_pseudo_labels(FINALS, SelectionConfig(theta=0.5, balance="none"), closed_set=True)
    assert kept(d) == {"n1", "n2", "n3", "n4", "n5"}  # the majority class takes it all
    assert d["x"].reason == "rejected: the committee gave no answer"
    assert "rank 6" in d["n6"].reason and d["n6"].reason.startswith("rejected")


def test_absolute_threshold():
    d = select_pseudo_labels(FINALS, SelectionConfig(threshold=0.35), closed_set=True)
    assert kept(d) == {"n1", "n2", "n3", "n4", "n5", "n6", "p1"}
    assert d["p2"].reason == "rejected: score 0.4000 > threshold 0.35"


def test_per_class_selection_keeps_theta_of_every_class():
    d = select_pseudo_labels(
        FINALS, SelectionConfig(theta=0.5, balance="per_class"), closed_set=True
    )
    assert kept(d) == {"n1", "n2", "n3", "p1", "g1"}
    assert "of class 'negative'" in d["g1"].reason


def test_equal_selection_splits_the_budget_across_classes():
    d = select_pseudo_labels(FINALS, SelectionConfig(theta=0.6, balance="equal"), closed_set=True)
    # Budget round(0.6 × 10) = 6: two per class.
    assert kept(d) == {"n1", "n2", "p1", "p2", "g1", "g2"}
    d = select_pseudo_labels(FINALS, SelectionConfig(theta=0.8, balance="equal"), closed_set=True)
    # Budget 8: the small classes are exhausted at 2 each, neutral takes the remaining 4.
    assert kept(d) == {"n1", "n2", "n3", "n4", "p1", "p2", "g1", "g2"}


def test_open_ended_answers_are_ranked_globally_and_adaptive_off_keeps_all():
    d = select_pseudo_labels(
        FINALS, SelectionConfig(theta=0.5, balance="per_class"), closed_set=False
    )
    assert kept(d) == {"n1", "n2", "n3", "n4", "n5"}
    d = select_pseudo_labels(FINALS, SelectionConfig(), closed_set=True, adaptive=False)
    assert kept(d) == {i for i, (a, _) in [(f["id"], (f["answer"], 0)) for f in FINALS] if a}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("theta", 0.0, "theta must be in"),
        ("theta", 1.5, "theta must be in"),
        ("threshold", -1.0, "threshold"),
    ],
)
def test_selection_config_rejects_out_of_range_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SelectionConfig(**{field: value})


def test_faiss_index_finds_the_same_neighbours_as_exact_search():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(200, 16)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queries = rng.normal(size=(30, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact, exact_sims = nearest_neighbors(queries, keys, 5)
    approx, approx_sims = nearest_neighbors(queries, keys, 5, index="faiss")
    assert approx.tolist() == exact.tolist()
    assert np.allclose(approx_sims, exact_sims, atol=1e-5)


def test_missing_optional_packages_give_a_clear_error(monkeypatch):
    import builtins

    from semievol.errors import ConfigError
    from semievol.stages.in_context import embed_questions

    real_import = builtins.__import__

    def no_optional(name, *args, **kwargs):
        if name in ("faiss", "sentence_transformers"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optional)
    with pytest.raises(ConfigError, match="pip install faiss-cpu"):
        nearest_neighbors(
            np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), 1, index="faiss"
        )
    with pytest.raises(ConfigError, match="pip install sentence-transformers"):
        embed_questions(None, ["a"], "sentence-transformers:all-MiniLM-L6-v2")


@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize("kind", ["multiple_choice", "label_set"])
def test_inline_demonstrations_are_solved_examples_in_one_user_message(kind, position):
    cfg, _, options = TASKS[kind]
    task = build_task(dataclasses.replace(cfg, instruction_position=position))
    answers = ["A", "C"] if kind == "multiple_choice" else ["negative", "positive"]
    demos = [Example(f"d{i}", f"Demo question {i}?", options, a) for i, a in enumerate(answers)]
    item = Example("u", "The real question?", options)
    inline = task.messages(item, demos, inline_demos=True)
    turns = task.messages(item, demos)
    assert [m["role"] for m in inline] == ["system", "user"]
    assert [m["role"] for m in turns] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    user = inline[-1]["content"]
    question = task.messages(item)[-1]["content"]  # the question as usual, with its instruction
    if position == "last":
        assert user.endswith(question)
    else:  # the instruction opens the message (shared by all items), the question comes last
        instruction = task.instruction_for(item)
        assert user.startswith(f"{instruction}\n\n")
        assert user.endswith(question.removeprefix(f"{instruction}\n\n"))
    for demo, answer in zip(demos, answers, strict=True):
        assert f"{demo.question}" in user and f"Answer: {answer}" in user
    # Instructions are not repeated for every demonstration.
    assert user.count(task.instruction_for(item)) == 1
