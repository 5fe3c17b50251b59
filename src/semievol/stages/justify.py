"""Self-justification: where the committee disagrees, the labeler sees the question with every
candidate answer (and the reasoning of generated ones) and gives the final answer.

Unanimous items keep the committee's answer. The final record of every item carries the answer,
where it came from, and the distribution or log-probabilities the confidence score is computed
from (closed-set: the final answer distribution; free-form: mean token NLL).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semievol.data import Example
from semievol.evaluation import (
    closed_set_answer,
    entropy,
    generated_answer,
    score_closed_set,
    shortest_first,
)
from semievol.progress import progress_bar
from semievol.rundir import ItemLog
from semievol.tasks import Task, is_closed_set

if TYPE_CHECKING:
    from semievol.backends import Backend

RATIONALE_CHARS = 400


def describe_candidate(task: Task, ex: Example, vote: dict[str, Any]) -> str:
    """How one committee answer is shown to the model: the answer as the task writes it (with the
    option text for multiple choice), plus the generated text when it says more than that."""
    answer = vote.get("vote")
    if answer is None:
        text = "(no clear answer)"
    elif ex.options and task.choices(ex) is not None and answer in task.choice_answers(ex):
        text = f"{answer}. {ex.options[task.choice_answers(ex).index(answer)]}"
    else:
        text = task.target(ex, answer)
    output = (vote.get("output") or "").strip()
    if output and output != text and output != answer:
        clipped = output if len(output) <= RATIONALE_CHARS else output[:RATIONALE_CHARS] + "…"
        text += f' (reasoning: "{clipped}")'
    return text


def justification_messages(
    task: Task, ex: Example, candidates: Sequence[str]
) -> list[dict[str, str]]:
    """The question as usual, followed by the committee's answers and a request for a final one.
    Built from the task's own prompt, so it works for every task type."""
    messages = task.messages(ex)
    listed = "\n".join(f"Answer {i}: {c}" for i, c in enumerate(candidates, start=1))
    messages[-1] = {
        "role": "user",
        "content": (
            f"{messages[-1]['content']}\n\nSeveral attempts at this question disagree:\n{listed}\n\n"
            "Check each against the question and give the correct final answer in the same format."
        ),
    }
    return messages


def resolve_committee(
    backend: Backend,
    task: Task,
    items: Sequence[Example],
    votes: Sequence[dict[str, dict[str, Any]]],
    *,
    justify: bool,
    labeler: str | None,
    stage_dir: Path,
    chunk_size: int,
    max_new_tokens: int,
) -> list[dict[str, Any]]:
    """One final record per item. ``votes[m][item_id]`` is member m's vote record."""
    closed = is_closed_set(task, items)
    answers = {ex.id: [v[ex.id].get("vote") for v in votes] for ex in items}
    disputed = [
        ex
        for ex in items
        if len(votes) > 1 and not (len(set(answers[ex.id])) == 1 and answers[ex.id][0] is not None)
    ]
    log = ItemLog(stage_dir / "justifications.jsonl")
    if justify and disputed:
        pending = shortest_first(
            backend,
            [ex for ex in disputed if ex.id not in log],
            lambda ex: justification_messages(
                task, ex, [describe_candidate(task, ex, v[ex.id]) for v in votes]
            ),
        )
        bar = progress_bar(
            total=len(disputed),
            initial=len(disputed) - len(pending),
            desc="self-justification",
            unit="q",
        )
        backend.use_adapter(labeler)
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start : start + chunk_size]
            log.computing(ex.id for ex in chunk)
            prompts = [
                justification_messages(
                    task, ex, [describe_candidate(task, ex, v[ex.id]) for v in votes]
                )
                for ex in chunk
            ]
            if closed:
                dists = score_closed_set(backend, task, prompts, chunk, progress=False)
                records = []
                for ex, dist in zip(chunk, dists, strict=True):
                    answer, distribution = closed_set_answer(task, ex, dist)
                    records.append({"id": ex.id, "answer": answer, "distribution": distribution})
            else:
                gens = backend.generate(prompts, max_new_tokens=max_new_tokens, progress=False)
                records = [
                    {"id": ex.id, **generated_answer(task, ex, g)}
                    for ex, (g,) in zip(chunk, gens, strict=True)
                ]
            log.append(records)
            bar.update(len(chunk))
        bar.close()

    finals = []
    disputed_ids = {ex.id for ex in disputed}
    for ex in items:
        member_votes = [v[ex.id] for v in votes]
        if ex.id not in disputed_ids:
            source = "single" if len(votes) == 1 else "unanimous"
            final = _from_votes(ex.id, answers[ex.id][0], member_votes, closed, source)
        elif justify and log.records[ex.id].get("answer") is not None:
            j = log.records[ex.id]
            final = {
                "id": ex.id,
                "answer": j["answer"],
                "source": "justification",
                "score": _score(j, closed),
                "justification": j,
            }
        else:
            winner = _majority(answers[ex.id], member_votes, closed)
            source = "majority (justification gave no answer)" if justify else "majority"
            final = _from_votes(ex.id, winner, member_votes, closed, source)
            if justify:
                final["justification"] = log.records[ex.id]
        finals.append(final)
    return finals


def _majority(
    answers: list[str | None], member_votes: list[dict[str, Any]], closed: bool
) -> str | None:
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    tied = [a for a, c in counts.items() if c == top]
    if len(tied) == 1:
        return tied[0]
    # Ties go to the answer the committee is most confident in.
    if closed:
        mean = _mean_distribution(member_votes)
        return max(tied, key=lambda a: mean.get(a, 0.0))
    nll = {a: min(_nll(v) for v in member_votes if v.get("vote") == a) for a in tied}
    return min(tied, key=nll.__getitem__)


def _nll(vote: dict[str, Any]) -> float:
    value = vote.get("mean_nll")
    return float(value) if value is not None else math.inf


def _mean_distribution(member_votes: list[dict[str, Any]]) -> dict[str, float]:
    keys = list(member_votes[0]["distribution"])
    return {k: sum(v["distribution"][k] for v in member_votes) / len(member_votes) for k in keys}


def _score(record: dict[str, Any], closed: bool) -> float:
    if closed:
        return entropy(list(record["distribution"].values()))
    return _nll(record)


def _from_votes(
    item_id: str,
    answer: str | None,
    member_votes: list[dict[str, Any]],
    closed: bool,
    source: str,
) -> dict[str, Any]:
    if answer is None:
        return {"id": item_id, "answer": None, "source": "no answer", "score": math.inf}
    if closed:
        # The committee's answer distribution: the mean of the members' distributions.
        score = entropy(list(_mean_distribution(member_votes).values()))
    else:
        nlls = [_nll(v) for v in member_votes if v.get("vote") == answer]
        score = sum(nlls) / len(nlls) if nlls else math.inf
    return {"id": item_id, "answer": answer, "source": source, "score": score}
