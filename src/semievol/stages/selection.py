"""Adaptive selection: keep the pseudo-labels the model is most sure of.

Every final answer has a confidence score where lower is more confident: the entropy of the final
answer distribution for closed-set tasks, the mean negative log-probability of the answer tokens
otherwise (the paper's score). Selection keeps the most confident fraction θ (or everything under
an absolute threshold), optionally per class so that a majority class cannot take the budget.
When the unlabeled data carries gold answers, the audit measures how good the kept and rejected
pseudo-labels are, and how precision moves with θ.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from semievol.data import Example
from semievol.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

if TYPE_CHECKING:
    from semievol.stages.committee import Member
    from semievol.tasks import Task

THETA_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class SelectionConfig:
    theta: float = 0.5
    """Fraction of answered pseudo-labels kept: the most confident θ (lowest score). The audit's
    accuracy-vs-θ table shows what other values would keep."""
    threshold: float | None = None
    """Keep every pseudo-label whose score is at most this value (entropy in nats, or mean NLL)
    instead of a fraction; balance does not apply."""
    balance: Literal["none", "per_class", "equal"] = "per_class"
    """none: one ranking over all items; per_class: the most confident θ of each predicted class;
    equal: the θ budget split evenly across classes (a class with fewer items gives its unused
    share to the others). Closed-set tasks only; open-ended answers are ranked globally."""
    active_learning: int = 100
    """How many of the least confident unlabeled items are exported for human labeling."""

    def __post_init__(self) -> None:
        if not (0 < self.theta <= 1):
            raise ValueError(f"theta must be in (0, 1], got {self.theta}")
        if self.threshold is not None and self.threshold < 0:
            raise ValueError(f"threshold must be >= 0 or null, got {self.threshold}")
        if self.active_learning < 0:
            raise ValueError(f"active_learning must be >= 0, got {self.active_learning}")


@dataclass
class Decision:
    kept: bool
    reason: str


def _ranked(ids: Sequence[str], scores: dict[str, float]) -> list[str]:
    return sorted(ids, key=lambda i: (scores[i], i))


def _equal_quotas(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Split ``budget`` evenly across classes; capacity a class lacks goes to the others."""
    quotas = dict.fromkeys(sizes, 0)
    open_classes = [c for c in sizes if sizes[c] > 0]
    left = min(budget, sum(sizes.values()))
    while left > 0 and open_classes:
        share = max(1, left // len(open_classes))
        for c in sorted(open_classes, key=lambda c: (sizes[c] - quotas[c], c)):
            give = min(share, sizes[c] - quotas[c], left)
            quotas[c] += give
            left -= give
            if left == 0:
                break
        open_classes = [c for c in open_classes if quotas[c] < sizes[c]]
    return quotas


def select_pseudo_labels(
    finals: Sequence[dict[str, Any]],
    config: SelectionConfig,
    *,
    closed_set: bool,
    adaptive: bool = True,
) -> dict[str, Decision]:
    """Keep or reject every final pseudo-label, with the reason.

    ``finals`` are records with ``id``, ``answer`` (None: no answer) and ``score`` (lower is more
    confident; None: no score). ``adaptive=False`` keeps every answered item (the w/o AS ablation).
    """
    decisions: dict[str, Decision] = {}
    scores: dict[str, float] = {}
    classes: dict[str, str] = {}
    for rec in finals:
        if rec["answer"] is None:
            decisions[rec["id"]] = Decision(False, "rejected: the committee gave no answer")
        elif rec.get("score") is None or not math.isfinite(rec["score"]):
            decisions[rec["id"]] = Decision(False, "rejected: no confidence score")
        else:
            scores[rec["id"]] = float(rec["score"])
            classes[rec["id"]] = str(rec["answer"])
    if not adaptive:
        for i in scores:
            decisions[i] = Decision(True, "kept: adaptive selection is off")
        return decisions
    if config.threshold is not None:
        for i, s in scores.items():
            ok = s <= config.threshold
            decisions[i] = Decision(
                ok,
                f"{'kept' if ok else 'rejected'}: score {s:.4f} "
                f"{'<=' if ok else '>'} threshold {config.threshold:g}",
            )
        return decisions

    groups: dict[str, list[str]] = defaultdict(list)
    balance = config.balance if closed_set else "none"
    for i in scores:
        groups[classes[i] if balance != "none" else "all"].append(i)
    if balance == "equal":
        quotas = _equal_quotas(
            {c: len(v) for c, v in groups.items()}, round(config.theta * len(scores))
        )
    else:
        quotas = {c: round(config.theta * len(v)) for c, v in groups.items()}
    for group, ids in groups.items():
        ranked = _ranked(ids, scores)
        quota = quotas[group]
        where = "" if balance == "none" else f" of class {group!r}"
        for rank, i in enumerate(ranked):
            ok = rank < quota
            what = (
                f"most confident {quota} of {len(ranked)}{where}"
                if balance != "equal"
                else f"class budget {quota} of {len(ranked)}{where}"
            )
            decisions[i] = Decision(
                ok,
                f"{'kept' if ok else 'rejected'}: score {scores[i]:.4f}, rank {rank + 1}; "
                f"{what} (θ={config.theta:g}, balance={balance})",
            )
    return decisions


def audit_pseudo_labels(
    finals: Sequence[dict[str, Any]],
    decisions: dict[str, Decision],
    gold: dict[str, str],
    is_correct: Any,
    config: SelectionConfig,
    *,
    closed_set: bool,
    adaptive: bool = True,
) -> dict[str, Any]:
    """Pseudo-label accuracy of all / kept / rejected items, by source and by class, and
    precision and class mix of the kept set for every θ of a grid."""
    audited = [r for r in finals if r["id"] in gold]
    correct = {r["id"]: bool(is_correct(r["answer"], gold[r["id"]])) for r in audited}

    def acc(ids: Sequence[str]) -> dict[str, Any]:
        return _accuracy([correct[i] for i in ids])

    ids = [r["id"] for r in audited]
    kept = [i for i in ids if decisions[i].kept]
    rejected = [i for i in ids if not decisions[i].kept]
    by_source: dict[str, list[str]] = defaultdict(list)
    by_class: dict[str, list[str]] = defaultdict(list)
    for r in audited:
        by_source[r["source"]].append(r["id"])
        if decisions[r["id"]].kept:
            by_class[str(r["answer"])].append(r["id"])
    curve = []
    for theta in THETA_GRID:
        trial = SelectionConfig(
            theta=theta, balance=config.balance, active_learning=config.active_learning
        )
        chosen = select_pseudo_labels(audited, trial, closed_set=closed_set, adaptive=adaptive)
        chosen_ids = [i for i in ids if chosen[i].kept]
        row = {"theta": theta, **acc(chosen_ids)}
        row["class_counts"] = dict(
            sorted(Counter(str(r["answer"]) for r in audited if chosen[r["id"]].kept).items())
        )
        curve.append(row)
    return {
        "items_with_gold": len(audited),
        "all": acc(ids),
        "kept": acc(kept),
        "rejected": acc(rejected),
        "by_source": {s: acc(v) for s, v in sorted(by_source.items())},
        "kept_by_class": {c: acc(v) for c, v in sorted(by_class.items())},
        "gold_distribution": dict(sorted(Counter(gold[i] for i in ids).items())),
        "accuracy_vs_theta": curve,
    }


def write_selection(
    task: Task,
    items: Sequence[Example],
    members: Sequence[Member],
    votes: Sequence[dict[str, dict[str, Any]]],
    finals: Sequence[dict[str, Any]],
    config: SelectionConfig,
    stage_dir: Path,
    *,
    closed_set: bool,
    adaptive: bool,
) -> dict[str, Any]:
    """The select stage: decisions, ``pseudo_labels.jsonl`` with provenance, the audit (when the
    unlabeled data has gold answers), and the exports for other trainers and for annotators."""
    decisions = select_pseudo_labels(finals, config, closed_set=closed_set, adaptive=adaptive)
    gold = {ex.id: ex.audit_gold for ex in items if ex.audit_gold is not None}
    score_kind = "entropy" if closed_set else "mean_nll"
    by_id = {ex.id: ex for ex in items}
    records = []
    for final in finals:
        item_id = final["id"]
        record: dict[str, Any] = {
            "id": item_id,
            "answer": final["answer"],
            "source": final["source"],
            "score": _finite(final.get("score")),
            "score_kind": score_kind,
            "kept": decisions[item_id].kept,
            "reason": decisions[item_id].reason,
            "votes": [
                {"member": m.spec(), **{k: v for k, v in vs[item_id].items() if k != "id"}}
                for m, vs in zip(members, votes, strict=True)
            ],
            "justification": {k: v for k, v in final.get("justification", {}).items() if k != "id"}
            or None,
        }
        if item_id in gold:
            record["audit_gold"] = gold[item_id]
            record["audit_correct"] = bool(task.is_correct(final["answer"], gold[item_id]))
        records.append(record)
    atomic_write_jsonl(stage_dir / "pseudo_labels.jsonl", records)

    kept = [r for r in records if r["kept"]]
    export = stage_dir / "export"
    atomic_write_jsonl(
        export / "pseudo_labeled.jsonl",
        [
            {
                "id": r["id"],
                "question": by_id[r["id"]].question,
                **({"options": by_id[r["id"]].options} if by_id[r["id"]].options else {}),
                "answer": r["answer"],
            }
            for r in kept
        ],
    )
    atomic_write_jsonl(
        export / "pseudo_labeled_chat.jsonl",
        [
            {
                "messages": [
                    *task.messages(by_id[r["id"]]),
                    {"role": "assistant", "content": task.target(by_id[r["id"]], r["answer"])},
                ]
            }
            for r in kept
        ],
    )
    # Least confident first: unanswered items, then the highest scores.
    uncertain = sorted(records, key=lambda r: (r["score"] is not None, -(r["score"] or 0.0)))
    _write_to_label(export / "to_label.csv", uncertain[: config.active_learning], by_id)

    summary: dict[str, Any] = {
        "items": len(records),
        "kept": len(kept),
        "score_kind": score_kind,
        "kept_by_class": dict(sorted(Counter(str(r["answer"]) for r in kept).items())),
        "answered_by_class": dict(
            sorted(Counter(str(r["answer"]) for r in records if r["answer"] is not None).items())
        ),
        "sources": dict(sorted(Counter(r["source"] for r in records).items())),
        "agreement_rate": (
            sum(r["source"] in ("unanimous", "single") for r in records) / len(records)
            if records
            else None
        ),
    }
    if gold:
        audit = audit_pseudo_labels(
            finals,
            decisions,
            gold,
            task.is_correct,
            config,
            closed_set=closed_set,
            adaptive=adaptive,
        )
        # How good each member is alone: the committee is only as useful as its members.
        audit["by_member"] = {
            m.spec(): _accuracy(
                [task.is_correct(vs[i].get("vote"), g) for i, g in gold.items() if i in vs]
            )
            for m, vs in zip(members, votes, strict=True)
        }
        atomic_write_json(stage_dir / "audit.json", audit)
        summary["audit"] = audit
    return summary


def _accuracy(outcomes: Sequence[bool]) -> dict[str, Any]:
    n, c = len(outcomes), sum(outcomes)
    return {"n": n, "correct": c, "accuracy": c / n if n else None}


def _finite(value: Any) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


def _write_to_label(
    path: Path, records: Sequence[dict[str, Any]], by_id: dict[str, Example]
) -> None:
    """A CSV in the input schema with an empty answer column, for human annotation."""
    import csv
    import io
    import json

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "question", "options", "model_answer", "score", "answer"])
    for r in records:
        ex = by_id[r["id"]]
        writer.writerow(
            [
                ex.id,
                ex.question,
                json.dumps(ex.options, ensure_ascii=False) if ex.options else "",
                r["answer"] if r["answer"] is not None else "",
                r["score"] if r["score"] is not None else "",
                "",
            ]
        )
    atomic_write_text(path, buffer.getvalue())
