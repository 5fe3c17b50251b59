"""Collaborative learning: a committee of differently configured labelers answers every
unlabeled item, and every vote is recorded.

A member is a short spec of ``key=value`` pairs:

- ``adapter``: ``labeler`` (the current round's model: SFT in round 1, the evolved adapter
  later), ``sft``, ``base`` (no adapter) or the path of a LoRA adapter directory;
- ``demos``: ``none``, ``knn`` (the k nearest labeled examples, nearest last), ``knn_reversed``
  (same, nearest first), ``knn_next`` (the next k neighbours) or ``random`` (k random labeled
  examples, seeded per item);
- ``temperature`` and ``seed``: 0 takes the most probable answer; above 0 the vote is sampled
  (closed-set tasks: from the answer distribution sharpened or flattened by the temperature;
  free-form tasks: a sampled generation).

Closed-set tasks need one forward pass per member and item (members that differ only in
temperature/seed share it); free-form tasks generate with per-token log-probabilities.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semievol.backends import Sampling
from semievol.data import Example
from semievol.evaluation import (
    closed_set_answer,
    generated_answer,
    score_closed_set,
    shortest_first,
)
from semievol.progress import progress_bar
from semievol.rundir import ItemLog
from semievol.tasks import Task, is_closed_set

if TYPE_CHECKING:
    from semievol.backends import Backend

DEMO_KINDS = ("none", "knn", "knn_reversed", "knn_next", "random")
NAMED_ADAPTERS = ("labeler", "sft", "base")


@dataclass
class CommitteeConfig:
    members: list[str] = field(
        default_factory=lambda: [
            "demos=none",
            "demos=none temperature=1 seed=1",
            "demos=none temperature=1 seed=2",
        ]
    )
    """The committee: one spec per member, e.g. 'adapter=sft demos=knn temperature=0.7 seed=1'
    (keys: adapter labeler|sft|base|PATH, demos none|knn|knn_reversed|knn_next|random,
    temperature, seed; defaults adapter=labeler demos=none temperature=0 seed=0). The default
    (greedy + two sampled votes from one forward pass, no demonstrations) is the one measured
    best and cheapest on fpb, where kNN-demonstration members scored 44-46 % against 79 % for
    the same model without them; add 'demos=knn' members for in-context propagation (they
    helped on the 40-example demo task). See BENCHMARKS.md."""
    justify: bool = True
    """Items the committee disagrees on get one more pass that shows every candidate answer and
    asks for the final one (self-justification); false: majority vote."""
    max_new_tokens: int = 64
    """Generation budget of free-form members and of their justification pass."""

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("members must list at least one committee member")
        for spec in self.members:
            parse_member(spec)  # raises ValueError naming the bad part
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Member:
    adapter: str = "labeler"
    demos: str = "none"
    temperature: float = 0.0
    seed: int = 0

    def spec(self) -> str:
        return (
            f"adapter={self.adapter} demos={self.demos} "
            f"temperature={self.temperature:g} seed={self.seed}"
        )

    @property
    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, seed=self.seed)

    @property
    def forward_pass(self) -> tuple[str, str]:
        """Members with the same forward pass see the same prompt through the same model."""
        return (self.adapter, self.demos)


def parse_member(spec: str) -> Member:
    values: dict[str, Any] = {}
    for part in spec.split():
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise ValueError(f"committee member {spec!r}: expected key=value, got {part!r}")
        if key in values:
            raise ValueError(f"committee member {spec!r}: {key} given twice")
        if key == "adapter":
            values[key] = value
        elif key == "demos":
            if value not in DEMO_KINDS:
                raise ValueError(
                    f"committee member {spec!r}: demos must be one of {', '.join(DEMO_KINDS)}"
                )
            values[key] = value
        elif key == "temperature":
            try:
                values[key] = float(value)
            except ValueError:
                values[key] = -1.0
            if not (0 <= values[key] <= 10):
                raise ValueError(
                    f"committee member {spec!r}: temperature must be a number in [0, 10]"
                )
        elif key == "seed":
            if not value.lstrip("-").isdigit():
                raise ValueError(f"committee member {spec!r}: seed must be an integer")
            values[key] = int(value)
        else:
            raise ValueError(
                f"committee member {spec!r}: unknown key {key!r} "
                "(known: adapter, demos, temperature, seed)"
            )
    return Member(**values)


def committee_members(
    config: CommitteeConfig, *, in_context: bool, collaborative: bool
) -> list[Member]:
    """The members that actually run: the first one only without collaborative learning, and
    no demonstrations without in-context propagation (duplicates that leaves are dropped)."""
    members = [parse_member(s) for s in config.members]
    if not collaborative:
        members = members[:1]
    if not in_context:
        members = [replace(m, demos="none") for m in members]
    unique: list[Member] = []
    for m in members:
        if m not in unique:
            unique.append(m)
    return unique


def demonstrations(
    member: Member,
    ex: Example,
    k: int,
    neighbors: dict[str, list[str]],
    labeled: dict[str, Example],
) -> list[Example]:
    """The labeled examples shown before ``ex`` (as earlier chat turns) for this member."""
    if member.demos == "none":
        return []
    if member.demos == "random":
        rng = random.Random(f"demos:{member.seed}:{ex.id}")
        ids = sorted(labeled)
        return [labeled[i] for i in rng.sample(ids, min(k, len(ids)))]
    near = neighbors[ex.id]
    chosen = near[k : 2 * k] if member.demos == "knn_next" else near[:k]
    demos = [labeled[i] for i in chosen]
    # Nearest last: the most similar example sits right before the question.
    return demos if member.demos == "knn_reversed" else demos[::-1]


def sample_vote(dist: Sequence[float], temperature: float, rng: random.Random) -> int:
    """Index drawn from ``dist`` raised to 1/temperature (renormalised)."""
    logs = [math.log(max(p, 1e-30)) / temperature for p in dist]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    return rng.choices(range(len(dist)), weights=weights)[0]


def collect_votes(
    backend: Backend,
    task: Task,
    items: Sequence[Example],
    members: Sequence[Member],
    *,
    demos_for: Callable[[Member, Example], list[Example]],
    adapter_for: Callable[[Member], str | None],
    stage_dir: Path,
    chunk_size: int,
    max_new_tokens: int,
    inline_demos: bool = True,
) -> list[ItemLog]:
    """Every member's vote on every item, appended to ``member<i>.jsonl`` as chunks finish.

    Members that see the same prompt through the same model share its forward pass: closed-set
    members reuse the first one's distributions; free-form members are generated together, one
    pass over each prompt for all their samplings. Items already in a member's log (from an
    interrupted run) are not recomputed.
    """
    closed = is_closed_set(task, items)
    logs = [ItemLog(stage_dir / f"member{i}.jsonl") for i in range(len(members))]
    total = len(items) * len(members)
    done = sum(sum(ex.id in log for ex in items) for log in logs)
    bar = progress_bar(total=total, initial=done, desc="committee votes", unit="vote")
    for i, member in enumerate(members):
        # A closed-set member sharing an earlier member's forward pass reuses its distributions.
        source = next(
            (j for j in range(i) if closed and members[j].forward_pass == member.forward_pass),
            None,
        )
        # Free-form members from this one on that share its forward pass generate with it.
        group = [i] + [
            j
            for j in range(i + 1, len(members))
            if not closed and members[j].forward_pass == member.forward_pass
        ]
        pending = [ex for ex in items if any(ex.id not in logs[g] for g in group)]
        if source is None:  # it runs the model: chunks of similar length
            pending = shortest_first(
                backend,
                pending,
                lambda ex, m=member: task.messages(ex, demos_for(m, ex), inline_demos=inline_demos),
            )
        bar.set_postfix_str(f"member {i + 1}/{len(members)}: {member.spec()}")
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start : start + chunk_size]
            if source is None:
                for g in group:
                    logs[g].computing(ex.id for ex in chunk if ex.id not in logs[g])
                backend.use_adapter(adapter_for(member))
                prompts = [
                    task.messages(ex, demos_for(member, ex), inline_demos=inline_demos)
                    for ex in chunk
                ]
            if closed:
                if source is not None:
                    dists = [
                        list(logs[source].records[ex.id]["distribution"].values()) for ex in chunk
                    ]
                else:
                    dists = score_closed_set(backend, task, prompts, chunk, progress=False)
                records = [
                    _closed_vote(task, ex, d, member) for ex, d in zip(chunk, dists, strict=True)
                ]
                logs[i].append(records)
                bar.update(len(records))
                continue
            gens = backend.generate(
                prompts,
                samplings=[members[g].sampling for g in group],
                max_new_tokens=max_new_tokens,
                progress=False,
            )
            for k, g in enumerate(group):
                records = []
                for ex, replies in zip(chunk, gens, strict=True):
                    if ex.id not in logs[g]:
                        answer = generated_answer(task, ex, replies[k])
                        records.append({"id": ex.id, "vote": answer.pop("answer"), **answer})
                logs[g].append(records)
                bar.update(len(records))
    bar.close()
    return logs


def _closed_vote(task: Task, ex: Example, dist: Sequence[float], member: Member) -> dict[str, Any]:
    vote, distribution = closed_set_answer(task, ex, dist)
    if member.temperature > 0:
        rng = random.Random(f"vote:{member.seed}:{ex.id}")
        vote = task.choice_answers(ex)[sample_vote(dist, member.temperature, rng)]
    return {"id": ex.id, "vote": vote, "distribution": distribution}
