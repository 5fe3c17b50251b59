"""Evaluation harness: the same code scores Vanilla, SFT and SemiEvol.

Closed-set tasks (multiple choice, label sets) take the most probable candidate from one forward
pass per question; free-form tasks generate greedily and extract the answer.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semievol.data import Example
from semievol.io import atomic_write_json, atomic_write_jsonl
from semievol.progress import progress_bar
from semievol.rundir import ItemLog
from semievol.tasks import Task, class_namer, is_closed_set

if TYPE_CHECKING:
    from semievol.backends import Backend, Generation


@dataclass
class EvalConfig:
    output_dir: str = "runs/eval"
    """Where metrics (metrics.json) and per-item predictions (predictions_<model>.jsonl) go."""
    adapters: list[str] = field(default_factory=lambda: ["vanilla"])
    """Models to evaluate in order, all on one loaded base model: 'vanilla' for the base model,
    or the path of a LoRA adapter directory."""
    max_new_tokens: int = 32
    """Generation budget for free-form tasks."""

    def __post_init__(self) -> None:
        if not self.adapters:
            raise ValueError("adapters must name at least one model ('vanilla' or a path)")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def entropy(probs: Sequence[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def closed_set_answer(
    task: Task, ex: Example, dist: Sequence[float]
) -> tuple[str, dict[str, float]]:
    """The most probable candidate answer, and the distribution keyed by answer."""
    answers = task.choice_answers(ex)
    best = max(range(len(dist)), key=dist.__getitem__)
    return answers[best], dict(zip(answers, (round(p, 6) for p in dist), strict=True))


def generated_answer(task: Task, ex: Example, gen: Generation) -> dict[str, Any]:
    """The answer stated in a generation, its text and its mean token NLL (None if empty)."""
    return {
        "answer": task.extract(gen.text, ex),
        "output": gen.text,
        "mean_nll": round(gen.mean_nll, 6) if gen.token_logprobs else None,
    }


def shortest_first(
    backend: Backend,
    examples: Sequence[Example],
    prompt_of: Callable[[Example], Sequence[dict[str, str]]],
) -> list[Example]:
    """Examples by the length of their prompt in the model's tokens, shortest first. A stage
    that works in chunks takes them in this order, so each chunk holds prompts of similar
    length and the backend's batches carry little padding (fpb committee, 64-item chunks:
    9.4 % of the tokens computed were padding in file order, 0.8 % sorted; BENCHMARKS.md)."""
    return sorted(examples, key=lambda ex: backend.prompt_tokens(prompt_of(ex)))


def score_closed_set(
    backend: Backend,
    task: Task,
    prompts: Sequence[Sequence[dict[str, str]]],
    examples: Sequence[Example],
    *,
    progress: bool = True,
    desc: str = "scoring",
) -> list[list[float]]:
    """The distribution over each example's candidate answers, scored the task's way."""
    return backend.score_choices(
        prompts,
        [task.choices(ex) for ex in examples],  # type: ignore[misc]
        full_sequence=task.full_sequence_scoring,
        progress=progress,
        desc=desc,
    )  # type: ignore[call-arg]


def predict(
    backend: Backend,
    task: Task,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 32,
    desc: str = "eval",
    log: ItemLog | None = None,
    chunk_size: int = 64,
) -> list[dict[str, Any]]:
    """One prediction record per example: answer, confidence, and the distribution if closed-set.

    With an ``ItemLog``, items already in it are not recomputed and new records are appended in
    chunks of ``chunk_size`` as they finish, so a killed evaluation resumes where it stopped.
    """
    closed = is_closed_set(task, examples)
    if log is None:
        return _predict_items(backend, task, examples, closed, max_new_tokens, desc, progress=True)
    pending = shortest_first(backend, [ex for ex in examples if ex.id not in log], task.messages)
    bar = progress_bar(
        total=len(examples), initial=len(examples) - len(pending), desc=desc, unit="q"
    )
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start : start + chunk_size]
        log.computing(ex.id for ex in chunk)
        log.append(
            _predict_items(backend, task, chunk, closed, max_new_tokens, desc, progress=False)
        )
        bar.update(len(chunk))
    bar.close()
    return [dict(log.records[ex.id]) for ex in examples]


def _predict_items(
    backend: Backend,
    task: Task,
    examples: Sequence[Example],
    closed: bool,
    max_new_tokens: int,
    desc: str,
    *,
    progress: bool,
) -> list[dict[str, Any]]:
    prompts = [task.messages(ex) for ex in examples]
    records: list[dict[str, Any]] = []
    if closed:
        dists = score_closed_set(backend, task, prompts, examples, desc=desc, progress=progress)
        for ex, dist in zip(examples, dists, strict=True):
            answer, distribution = closed_set_answer(task, ex, dist)
            records.append(
                {
                    "id": ex.id,
                    "prediction": answer,
                    "confidence": max(dist),
                    "entropy": entropy(dist),
                    "distribution": distribution,
                }
            )
    else:
        gens = backend.generate(
            prompts, max_new_tokens=max_new_tokens, desc=desc, progress=progress
        )
        for ex, (gen,) in zip(examples, gens, strict=True):
            records.append(
                {
                    "id": ex.id,
                    "prediction": task.extract(gen.text, ex),
                    "confidence": math.exp(-gen.mean_nll) if gen.token_logprobs else 0.0,
                    "output": gen.text,
                }
            )
    return records


def score(
    task: Task, examples: Sequence[Example], records: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion counts (gold → predicted)."""
    name = class_namer(task, examples)

    correct = 0
    per_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for ex, rec in zip(examples, records, strict=True):
        assert ex.answer is not None, "evaluation needs gold answers"
        ok = task.is_correct(rec["prediction"], ex.answer)
        rec["gold"] = ex.answer
        rec["correct"] = ok
        correct += ok
        gold_name = name(ex.answer)
        per_class[gold_name][0] += ok
        per_class[gold_name][1] += 1
        confusion[gold_name][name(rec["prediction"])] += 1
    n = len(records)
    acc = correct / n if n else 0.0
    metrics: dict[str, Any] = {
        "n": n,
        "correct": correct,
        "accuracy": acc,
        "std_error": math.sqrt(acc * (1 - acc) / n) if n else 0.0,
        "no_answer": sum(r["prediction"] is None for r in records),
        "per_class": {
            k: {"n": v[1], "correct": v[0], "accuracy": v[0] / v[1]}
            for k, v in sorted(per_class.items())
        },
        "confusion": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
        "predicted_distribution": dict(
            sorted(Counter(name(r["prediction"]) for r in records).items())
        ),
    }
    if records and "entropy" in records[0]:
        metrics["mean_entropy"] = sum(r["entropy"] for r in records) / n
    return metrics


def evaluate(
    backend: Backend,
    task: Task,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 32,
    desc: str = "eval",
    log: ItemLog | None = None,
    chunk_size: int = 64,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-item records of the backend's active model on labeled examples."""
    records = predict(
        backend,
        task,
        examples,
        max_new_tokens=max_new_tokens,
        desc=desc,
        log=log,
        chunk_size=chunk_size,
    )
    return score(task, examples, records), records


def format_comparison(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of accuracy per model, with error reduction against the first row."""
    rows = ["| model | accuracy | ± s.e. | n | error reduction vs first |", "|---|---|---|---|---|"]
    base_err = None
    for label, m in results.items():
        err = 1 - m["accuracy"]
        if base_err is None:
            base_err = err
            reduction = "—"
        else:
            reduction = f"{(base_err - err) / base_err * 100:+.1f} %" if base_err > 0 else "—"
        rows.append(
            f"| {label} | {m['accuracy'] * 100:.1f} % | {m['std_error'] * 100:.1f} | {m['n']} | {reduction} |"
        )
    return "\n".join(rows)


def compare_models(
    backend: Backend,
    task: Task,
    examples: Sequence[Example],
    models: dict[str, str | None],
    output_dir: str | Path,
    *,
    max_new_tokens: int = 32,
    resume: bool = False,
    chunk_size: int = 64,
) -> dict[str, dict[str, Any]]:
    """Evaluate several models (label → adapter name, None = Vanilla) on one loaded backend and
    write ``metrics.json`` and ``predictions_<label>.jsonl`` to ``output_dir``.

    With ``resume`` (the pipeline's keyed eval stages), predictions are appended to
    ``predictions_<label>.jsonl`` as they finish and an interrupted evaluation continues from
    them; the file is then rewritten with the scored records.
    """
    output_dir = Path(output_dir)
    results: dict[str, dict[str, Any]] = {}
    for label, adapter in models.items():
        backend.use_adapter(adapter)
        path = output_dir / f"predictions_{_slug(label)}.jsonl"
        metrics, records = evaluate(
            backend,
            task,
            examples,
            max_new_tokens=max_new_tokens,
            desc=f"eval {label}",
            log=ItemLog(path) if resume else None,
            chunk_size=chunk_size,
        )
        results[label] = metrics
        atomic_write_jsonl(path, records)
    atomic_write_json(output_dir / "metrics.json", results)
    return results


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label).strip("_") or "model"


def format_per_class(results: dict[str, dict[str, Any]]) -> str:
    """Per-class accuracy of every model, one Markdown row per class."""
    labels = list(results)
    classes = sorted({c for m in results.values() for c in m["per_class"]})
    rows = ["| class | n | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for c in classes:
        n = next(m["per_class"][c]["n"] for m in results.values() if c in m["per_class"])
        accs = [
            f"{results[lab]['per_class'][c]['accuracy'] * 100:.1f} %"
            if c in results[lab]["per_class"]
            else "—"
            for lab in labels
        ]
        rows.append(f"| {c} | {n} | " + " | ".join(accs) + " |")
    return "\n".join(rows)
