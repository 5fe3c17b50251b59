"""``report.md`` of a pipeline run, rebuilt from the run directory's artifacts every time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semievol.data import Example, summarize
from semievol.evaluation import format_per_class
from semievol.io import atomic_write_text
from semievol.tasks import Task, class_namer

if TYPE_CHECKING:
    from semievol.config import Config
    from semievol.pipeline import Round
    from semievol.rundir import RunDir


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def accuracy_table(metrics: dict[str, dict[str, Any]]) -> str:
    """Accuracy per model with the error reduction relative to Vanilla and to SFT."""
    refs = [r for r in ("Vanilla", "SFT") if r in metrics]
    head = "| model | accuracy | ± s.e. | n |" + "".join(f" error reduction vs {r} |" for r in refs)
    rows = [head, "|---|---|---|---|" + "---|" * len(refs)]
    for label, m in metrics.items():
        cells = [label, _pct(m["accuracy"]), f"{m['std_error'] * 100:.1f}", str(m["n"])]
        for ref in refs:
            base = 1 - metrics[ref]["accuracy"]
            if label == ref or base <= 0:
                cells.append("—")
            else:
                cells.append(f"{(base - (1 - m['accuracy'])) / base * 100:+.1f} %")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _data_section(
    data: dict[str, list[Example]],
    validation: Sequence[Example],
    task: Task,
    leakage: Sequence[str],
) -> str:
    rows = ["| split | rows | label distribution |", "|---|---|---|"]
    for split, examples in data.items():
        s = summarize(examples, task, audit=split == "unlabeled")
        dist = ", ".join(f"{k}: {v}" for k, v in s["label_distribution"].items())
        note = " (gold, audit only)" if split == "unlabeled" and dist else ""
        rows.append(f"| {split} | {s['rows']} | {dist or '—'}{note} |")
    if validation:
        rows.append(f"| (validation, from labeled) | {len(validation)} | held out of training |")
    rows += [f"\n**Warning**: {w}." for w in leakage]
    return "\n".join(rows)


def _timings(run: RunDir, names: Sequence[str]) -> str:
    entries = [(name, run.entry(name)) for name in names]
    entries = [(name, entry) for name, entry in entries if entry is not None]
    # the GPU column only where some stage ran on a GPU
    gpu = any(entry.get("peak_gpu_mb") is not None for _, entry in entries)
    rows = [
        "| stage | seconds (when computed) | peak RSS MiB |"
        + (" peak GPU MiB |" if gpu else "")
        + " this invocation |",
        "|---|---|---|" + ("---|" if gpu else "") + "---|",
    ]
    total = 0.0
    for name, entry in entries:
        if name in run.executed:
            status = "ran"
        elif "cached_from" in entry:
            status = "copied from the stage cache"
        else:
            status = "up to date, skipped"
        memory = [entry.get("peak_rss_mb")] + ([entry.get("peak_gpu_mb")] if gpu else [])
        cells = " | ".join(f"{m:,.0f}" if m is not None else "—" for m in memory)
        rows.append(f"| {name} | {entry['seconds']:.1f} | {cells} | {status} |")
        total += entry["seconds"]
    rows.append(f"| total | {total:.1f} | |" + (" |" if gpu else "") + " |")
    return "\n".join(rows)


def _round_section(rnd: Round, name: Any) -> str:
    s = rnd.select
    lines = [f"### Round {rnd.number}: {s['items']} unlabeled items"]
    agreement = s.get("agreement_rate")
    lines.append(
        f"Committee agreement: {_pct(agreement)}; answer sources: "
        + ", ".join(f"{k} {v}" for k, v in s["sources"].items())
        + f". Confidence score: {s['score_kind']}. Kept {s['kept']} of {s['items']}."
    )
    audit = s.get("audit")
    kept_by_class = (audit or {}).get("kept_by_class", {})
    rows = ["| class | answered | kept | kept precision (audit) |", "|---|---|---|---|"]
    for cls in sorted(set(s["answered_by_class"]) | set(s["kept_by_class"])):
        precision = kept_by_class.get(cls, {}).get("accuracy")
        rows.append(
            f"| {name(cls)} | {s['answered_by_class'].get(cls, 0)} | "
            f"{s['kept_by_class'].get(cls, 0)} | {_pct(precision)} |"
        )
    lines += ["", "Selection per class:", "", *rows]
    if audit:
        lines += [
            "",
            f"Audit against the unlabeled file's gold answers ({audit['items_with_gold']} items; "
            "never used for labeling or training):",
            "",
            "| pseudo-labels | n | accuracy |",
            "|---|---|---|",
        ]
        for part in ("all", "kept", "rejected"):
            lines.append(f"| {part} | {audit[part]['n']} | {_pct(audit[part]['accuracy'])} |")
        for source, a in audit["by_source"].items():
            lines.append(f"| source: {source} | {a['n']} | {_pct(a['accuracy'])} |")
        for member, a in audit.get("by_member", {}).items():
            lines.append(f"| votes of member `{member}` | {a['n']} | {_pct(a['accuracy'])} |")
        lines += [
            "",
            "Accuracy of the kept pseudo-labels as a function of θ (same balance rule):",
            "",
            "| θ | kept | accuracy | kept per class |",
            "|---|---|---|---|",
        ]
        for row in audit["accuracy_vs_theta"]:
            mix = ", ".join(f"{name(k)}: {v}" for k, v in row["class_counts"].items())
            lines.append(f"| {row['theta']:g} | {row['n']} | {_pct(row['accuracy'])} | {mix} |")
    return "\n".join(lines)


def model_name(cfg: Config) -> str:
    if cfg.model.backend == "dummy":
        return "dummy (test backend)"
    return cfg.model.name or "SmolLM2-135M-Instruct (bundled)"


def write_report(
    cfg: Config,
    run: RunDir,
    data: dict[str, list[Example]],
    validation: Sequence[Example],
    rounds: Sequence[Round],
    metrics: dict[str, dict[str, Any]],
    task: Task,
    leakage: Sequence[str] = (),
) -> Path:
    from semievol.pipeline import stage_names

    p = cfg.pipeline
    name = class_namer(task, data["labeled"])
    off = [
        label
        for label, on in (
            ("in-weight propagation", p.in_weight),
            ("in-context propagation", p.in_context),
            ("collaborative learning", p.collaborative),
            ("adaptive selection", p.adaptive_selection),
        )
        if not on
    ]
    parts = [
        "# SemiEvol run report",
        "",
        f"Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} from `{run.root}` "
        f"(resolved config: `semievol_config.yaml`).",
        f"Model: {model_name(cfg)}; task: {cfg.task.type}; rounds: {p.rounds}; evolve from: {p.evolve_from}; "
        f"selection: θ={cfg.selection.theta:g}"
        + (
            f", threshold {cfg.selection.threshold:g}"
            if cfg.selection.threshold is not None
            else ""
        )
        + f", balance {cfg.selection.balance}."
        + (f" Ablation: without {', '.join(off)}." if off else ""),
        "",
        "## Data",
        "",
        _data_section(data, validation, task, leakage),
        "",
        "## Results on the test set",
        "",
    ]
    if metrics:
        parts += [accuracy_table(metrics), "", "Per-class accuracy:", "", format_per_class(metrics)]
    else:
        parts.append("No test data configured (data.test).")
    parts += ["", "## Pseudo-labels", ""]
    for rnd in rounds:
        parts += [_round_section(rnd, name), ""]
    parts += [
        "Per-item votes, scores and reasons: `round<r>/select/pseudo_labels.jsonl`; kept "
        "pseudo-labels as a dataset: `round<r>/select/export/pseudo_labeled.jsonl` (chat format: "
        "`pseudo_labeled_chat.jsonl`); least confident items for human labeling: "
        "`round<r>/select/export/to_label.csv`.",
        "",
        "## Stage timings",
        "",
        _timings(run, stage_names(cfg)),
        "",
    ]
    path = run.root / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path
