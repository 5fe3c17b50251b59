"""The SemiEvol pipeline, as the method reads:

1. in-weight propagation    LoRA SFT on the labeled data                     (stage sft/train)
2. in-context propagation   k nearest labeled examples as demonstrations     (round<r>/neighbors)
3. collaborative learning   a committee of configurations votes on each item (round<r>/committee)
4. self-justification       disagreements get a final, informed answer      (round<r>/justify)
5. adaptive selection       keep the most confident pseudo-labels           (round<r>/select)
6. evolve                   fine-tune on labeled ∪ kept pseudo-labels       (round<r>/evolve)
7. evaluate                 Vanilla, SFT and SemiEvol on the test set       (eval/<model>)
8. rounds                   2-6 again with the latest adapter as the labeler

Every stage is cached in the run directory under a key of its config and inputs (see
``semievol.rundir``); the report is rebuilt from the artifacts at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from semievol.data import Example, load_splits
from semievol.errors import Interrupted
from semievol.io import atomic_write_jsonl
from semievol.rundir import RunDir, fingerprint_examples, read_jsonl, stable_hash
from semievol.stages.committee import Member, committee_members
from semievol.tasks import Task, build_task, is_closed_set
from semievol.training import result_key, split_validation

if TYPE_CHECKING:
    from semievol.backends import Backend, ModelConfig
    from semievol.config import Config

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    run_dir: str = "runs/semievol"
    """Run directory: every stage's artifacts, the manifest, report.md. Re-running the same
    command skips finished stages and continues interrupted ones."""
    stage_cache: str | None = None
    """Folder shared between runs: finished stages are stored there by key and reused by any
    run whose stage has the same key (same config and inputs), e.g. one SFT adapter for every
    ablation. null: no sharing."""
    rounds: int = 1
    """SemiEvol rounds (stages 2-6); each round's evolved adapter labels the next round."""
    unlabeled_batches: bool = False
    """Split the unlabeled data into `rounds` consecutive batches and label batch r in round r
    (data arriving over time; pseudo-labels accumulate); false: every round relabels all of it."""
    in_weight: bool = True
    """In-weight propagation (SFT on labeled data first). false: the base model labels (w/o IWP)."""
    in_context: bool = True
    """In-context propagation (kNN demonstrations). false: members see no demonstrations (w/o ICP)."""
    collaborative: bool = True
    """Collaborative learning (the committee and self-justification). false: the first committee
    member alone labels (w/o CL)."""
    adaptive_selection: bool = True
    """Adaptive selection by confidence. false: every answered pseudo-label is kept (w/o AS)."""
    evolve_from: Literal["base", "sft"] = "sft"
    """Evolve stage: 'sft' continues training the SFT adapter (the latest adapter in later
    rounds); 'base' trains a fresh adapter on the base model. A fresh adapter has to learn
    minority classes again from pseudo-labels that hardly contain them (BENCHMARKS.md)."""
    evolve_epochs: int | None = 1
    """Epochs of the evolve stage (null: train.epochs); with a validation split the best one
    is kept."""
    evolve_learning_rate: float | None = None
    """Learning rate of the evolve stage (null: train.learning_rate)."""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.evolve_epochs is not None and self.evolve_epochs < 1:
            raise ValueError(f"evolve_epochs must be >= 1 or null, got {self.evolve_epochs}")
        if self.evolve_learning_rate is not None and not (0 < self.evolve_learning_rate < 1):
            raise ValueError(
                f"evolve_learning_rate must be in (0, 1) or null, got {self.evolve_learning_rate}"
            )
        if not self.run_dir.strip():
            raise ValueError("run_dir must not be empty")


class Models:
    """One backend for the whole run, loaded on first use, and its adapters by directory."""

    def __init__(self, config: ModelConfig):
        self.config = dataclasses.replace(config, adapter=None)
        self._backend: Backend | None = None
        self._names: dict[str, str] = {}

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from semievol.backends import build_backend

            self._backend = build_backend(self.config)
        return self._backend

    def adapter(self, path: Path | None) -> str | None:
        """Backend name of the adapter saved at ``path`` (None: the base model)."""
        if path is None:
            return None
        key = str(Path(path).resolve())
        if key not in self._names:
            self._names[key] = self.backend.load_adapter(path)
        return self._names[key]

    def trained(self, path: Path, name: str) -> None:
        self._names[str(Path(path).resolve())] = name


@dataclass
class Round:
    """Where one round's artifacts are and the adapter it produced."""

    number: int
    items: list[Example]
    dir: Path
    adapter: Path | None = None
    key: str | None = None
    select: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The select stage's summary (counts per class, agreement, audit)."""
    kept: dict[str, str] = dataclasses.field(default_factory=dict)
    """Kept pseudo-labels: item id → answer."""


@dataclass
class PipelineResult:
    run_dir: Path
    report: Path
    metrics: dict[str, dict[str, Any]]
    rounds: list[Round]
    executed: list[str]
    skipped: list[str]


def has_justification_stage(cfg: Config) -> bool:
    """Self-justification runs as a stage of its own; otherwise selection takes the majority."""
    return cfg.pipeline.collaborative and cfg.committee.justify


def needs_neighbors(cfg: Config) -> bool:
    """In-context propagation runs when it is on and some committee member shows demos."""
    members = committee_members(
        cfg.committee, in_context=cfg.pipeline.in_context, collaborative=cfg.pipeline.collaborative
    )
    return any(m.demos != "none" for m in members)


def stage_names(cfg: Config) -> list[str]:
    """The stages this config runs, in order."""
    p = cfg.pipeline
    names = ["sft/train"] if p.in_weight else []
    for r in range(1, p.rounds + 1):
        names += [f"round{r}/neighbors"] if needs_neighbors(cfg) else []
        names += [f"round{r}/committee"]
        names += [f"round{r}/justify"] if has_justification_stage(cfg) else []
        names += [f"round{r}/select", f"round{r}/evolve"]
    if cfg.data.test:
        names += ["eval/vanilla"] + (["eval/sft"] if p.in_weight else [])
        names += [f"eval/round{r}" for r in range(1, p.rounds + 1)]
    return names


@dataclass
class Context:
    """What every stage of one run shares."""

    cfg: Config
    run: RunDir
    task: Task
    models: Models
    data: dict[str, list[Example]]
    labeled: list[Example]
    """Labeled examples used for training and demonstrations (validation held out)."""
    validation: list[Example]
    closed_set: bool
    base_key: dict[str, Any]
    resolved: dict[str, Any]
    leakage: list[str] = dataclasses.field(default_factory=list)
    """Warnings about items shared between splits."""
    sft_dir: Path | None = None
    sft_key: str | None = None

    @property
    def chunk(self) -> int:
        """Items per appended batch of an inference stage (what a crash can lose)."""
        return inference_chunk(self.cfg.model)


def inference_chunk(model: ModelConfig) -> int:
    """Items per appended chunk of an inference stage: a few batches."""
    return 64 if model.batch_size == "auto" else model.batch_size * 4


def run_pipeline(cfg: Config, *, force: str | None = None) -> PipelineResult:
    """Run (or resume) SemiEvol as configured and write the report."""
    try:
        return _run_stages(cfg, force)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; finished stages and items are kept in {cfg.pipeline.run_dir}: "
            "run the same command again to resume"
        ) from None


def _run_stages(cfg: Config, force: str | None) -> PipelineResult:
    from semievol.report import write_report

    ctx = setup(cfg, force)
    if cfg.pipeline.in_weight:
        ctx.sft_dir, ctx.sft_key = in_weight_propagation(ctx)
    labeler, labeler_key = ctx.sft_dir, ctx.sft_key
    kept: dict[str, str] = {}
    rounds: list[Round] = []
    for r in range(1, cfg.pipeline.rounds + 1):
        rnd = Round(r, unlabeled_for_round(ctx, r), ctx.run.root / f"round{r}")
        round_key = {
            **ctx.base_key,
            "labeler": labeler_key,
            "items": fingerprint_examples(rnd.items),
        }
        members = committee_members(
            cfg.committee,
            in_context=cfg.pipeline.in_context,
            collaborative=cfg.pipeline.collaborative,
        )
        neighbors, neighbors_key = in_context_propagation(ctx, rnd, labeler, round_key)
        votes_key = collaborative_labeling(
            ctx, rnd, members, labeler, neighbors, {**round_key, "neighbors": neighbors_key}
        )
        finals_key = self_justification(ctx, rnd, members, labeler, votes_key)
        select_key = adaptive_selection(ctx, rnd, members, finals_key)
        kept = {**kept, **rnd.kept} if cfg.pipeline.unlabeled_batches else rnd.kept
        rnd.key = evolve_adapter(ctx, rnd, kept, labeler, labeler_key, select_key)
        labeler, labeler_key = rnd.adapter, rnd.key
        rounds.append(rnd)
    metrics = evaluate_models(ctx, rounds) if cfg.data.test else {}
    report = write_report(
        cfg, ctx.run, ctx.data, ctx.validation, rounds, metrics, ctx.task, ctx.leakage
    )
    return PipelineResult(ctx.run.root, report, metrics, rounds, ctx.run.executed, ctx.run.skipped)


def setup(cfg: Config, force: str | None) -> Context:
    """Validate data and config before any model is loaded; write the resolved config."""
    from semievol.config import config_to_dict, dump_config

    task = build_task(cfg.task)
    splits = ["labeled", "unlabeled"] + (["test"] if cfg.data.test else [])
    data = load_splits(cfg.data, task, splits)  # type: ignore[arg-type]
    # Only valid input gets a run directory: bad input leaves nothing behind.
    run = RunDir(cfg.pipeline.run_dir, force=force, cache=cfg.pipeline.stage_cache)
    run.check_force(stage_names(cfg))
    labeled, validation = split_validation(data["labeled"], cfg.train.val_fraction, cfg.train.seed)
    leakage = leakage_warnings(data)
    for warning in leakage:
        log.warning("warning: %s", warning)
    dump_config(cfg, run.root / "semievol_config.yaml")
    model_key = {
        f: getattr(cfg.model, f)
        for f in ("backend", "name", "adapter", "dtype", "autocast", "seed")
    }
    return Context(
        cfg=cfg,
        run=run,
        task=task,
        models=Models(cfg.model),
        data=data,
        labeled=labeled,
        validation=validation,
        closed_set=is_closed_set(task, data["labeled"]),
        base_key={
            "model": model_key,
            "task": cfg.task,
            "prompts": prompt_fingerprint(task, data["labeled"]),
            "labeled": fingerprint_examples(labeled),
            "validation": fingerprint_examples(validation),
        },
        resolved=config_to_dict(cfg),
        leakage=leakage,
    )


def prompt_fingerprint(task: Task, labeled: Sequence[Example]) -> str:
    """Hash of how the task renders prompts and targets (on the first labeled items), so that
    cached stages are recomputed when the prompt format changes, by config or by code."""
    ex, demos = labeled[0], list(labeled[1:3])
    return stable_hash(
        [
            task.messages(ex),
            task.messages(ex, demos),
            task.messages(ex, demos, inline_demos=True),
            task.target(ex, ex.answer),  # type: ignore[arg-type]
        ]
    )


def leakage_warnings(data: dict[str, list[Example]]) -> list[str]:
    """Items shared between splits (same question and options), e.g. test items in labeled."""
    from semievol.data import find_overlap

    names = list(data)
    return [
        f"{overlap} {b} items also appear in {a} (same question and options: leakage)"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if (overlap := find_overlap(data[a], data[b]))
    ]


def unlabeled_for_round(ctx: Context, r: int) -> list[Example]:
    unlabeled, p = ctx.data["unlabeled"], ctx.cfg.pipeline
    if not p.unlabeled_batches:
        return unlabeled
    size = math.ceil(len(unlabeled) / p.rounds)
    return unlabeled[(r - 1) * size : r * size]


# --- 1. in-weight propagation ------------------------------------------------------------------


def in_weight_propagation(ctx: Context) -> tuple[Path, str]:
    from semievol.stages.in_weight import train_adapter, training_summary

    init = Path(ctx.cfg.model.adapter) if ctx.cfg.model.adapter else None

    def train_sft(stage_dir: Path) -> dict[str, Any]:
        result = train_adapter(
            ctx.models.backend,
            ctx.task,
            ctx.labeled,
            ctx.validation,
            ctx.cfg.train,
            stage_dir / "adapter",
            init_adapter=init,
            resolved_config=ctx.resolved,
        )
        ctx.models.trained(stage_dir / "adapter", result.adapter_name)
        return training_summary(result)

    key, _ = ctx.run.stage(
        "sft/train",
        {**ctx.base_key, "train": result_key(ctx.cfg.train)},
        train_sft,
        resumable=True,  # keeps the training checkpoint of an interrupted run
    )
    return ctx.run.root / "sft/train/adapter", key


# --- 2. in-context propagation -----------------------------------------------------------------


def in_context_propagation(
    ctx: Context, rnd: Round, labeler: Path | None, round_key: dict[str, Any]
) -> tuple[dict[str, list[str]], str | None]:
    """Neighbour lists (unlabeled id → labeled ids, nearest first), or nothing without ICP."""
    from semievol.stages.in_context import load_neighbors, propagate_in_context

    if not needs_neighbors(ctx.cfg):
        return {}, None

    def find_neighbors(stage_dir: Path) -> dict[str, Any]:
        ctx.models.backend.use_adapter(ctx.models.adapter(labeler))
        return propagate_in_context(
            ctx.models.backend,
            ctx.labeled,
            rnd.items,
            ctx.cfg.in_context,
            stage_dir,
            neighbors_kept=2 * ctx.cfg.in_context.k,  # knn_next members use neighbours k+1..2k
        )

    key, _ = ctx.run.stage(
        f"round{rnd.number}/neighbors",
        {
            **round_key,
            "in_context": {f: getattr(ctx.cfg.in_context, f) for f in ("k", "embedder", "index")},
        },
        find_neighbors,
        resumable=True,
    )
    return load_neighbors(rnd.dir / "neighbors"), key


# --- 3. collaborative learning -----------------------------------------------------------------


def collaborative_labeling(
    ctx: Context,
    rnd: Round,
    members: list[Member],
    labeler: Path | None,
    neighbors: dict[str, list[str]],
    key_material: dict[str, Any],
) -> str:
    from semievol.stages.committee import collect_votes, demonstrations

    by_id = {ex.id: ex for ex in ctx.labeled}

    def adapter_for(member: Member) -> str | None:
        named = {"labeler": labeler, "sft": ctx.sft_dir, "base": None}
        path = named[member.adapter] if member.adapter in named else Path(member.adapter)
        return ctx.models.adapter(path)

    def vote(stage_dir: Path) -> dict[str, Any]:
        collect_votes(
            ctx.models.backend,
            ctx.task,
            rnd.items,
            members,
            demos_for=lambda m, ex: demonstrations(m, ex, ctx.cfg.in_context.k, neighbors, by_id),
            inline_demos=ctx.cfg.in_context.demo_format == "inline",
            adapter_for=adapter_for,
            stage_dir=stage_dir,
            chunk_size=ctx.chunk,
            max_new_tokens=ctx.cfg.committee.max_new_tokens,
        )
        return {"members": [m.spec() for m in members]}

    key, _ = ctx.run.stage(
        f"round{rnd.number}/committee",
        {
            **key_material,
            "sft": ctx.sft_key,
            "members": [m.spec() for m in members],
            "k": ctx.cfg.in_context.k,
            "demo_format": ctx.cfg.in_context.demo_format,
            "max_new_tokens": ctx.cfg.committee.max_new_tokens,
        },
        vote,
        resumable=True,
    )
    return key


def read_votes(rnd: Round, members: list[Member]) -> list[dict[str, dict[str, Any]]]:
    """``votes[m][item_id]``: member m's vote record."""
    return [
        {rec["id"]: rec for rec in read_jsonl(rnd.dir / f"committee/member{i}.jsonl")}
        for i in range(len(members))
    ]


# --- 4. self-justification ---------------------------------------------------------------------


def self_justification(
    ctx: Context, rnd: Round, members: list[Member], labeler: Path | None, votes_key: str
) -> str:
    """Final answers (``justify/finals.jsonl``); without the stage the select stage takes the
    majority vote itself."""
    from semievol.stages.justify import resolve_committee

    if not has_justification_stage(ctx.cfg):
        return votes_key
    needed = len(members) > 1

    def justify(stage_dir: Path) -> dict[str, Any]:
        finals = resolve_committee(
            ctx.models.backend if needed else None,
            ctx.task,
            rnd.items,
            read_votes(rnd, members),
            justify=needed,
            labeler=ctx.models.adapter(labeler) if needed else None,
            stage_dir=stage_dir,
            chunk_size=ctx.chunk,
            max_new_tokens=ctx.cfg.committee.max_new_tokens,
        )
        atomic_write_jsonl(stage_dir / "finals.jsonl", finals)
        return {"sources": dict(Counter(f["source"] for f in finals)), "items": len(finals)}

    key, _ = ctx.run.stage(
        f"round{rnd.number}/justify", {"votes": votes_key}, justify, resumable=True
    )
    return key


# --- 5. adaptive selection ---------------------------------------------------------------------


def adaptive_selection(ctx: Context, rnd: Round, members: list[Member], finals_key: str) -> str:
    from semievol.stages.justify import resolve_committee
    from semievol.stages.selection import write_selection

    def select(stage_dir: Path) -> dict[str, Any]:
        votes = read_votes(rnd, members)
        if has_justification_stage(ctx.cfg):
            finals = read_jsonl(rnd.dir / "justify/finals.jsonl")
        else:  # no justification stage: majority vote, no model call
            finals = resolve_committee(
                None,
                ctx.task,
                rnd.items,
                votes,
                justify=False,
                labeler=None,
                stage_dir=stage_dir,
                chunk_size=ctx.chunk,
                max_new_tokens=ctx.cfg.committee.max_new_tokens,
            )
        return write_selection(
            ctx.task,
            rnd.items,
            members,
            votes,
            finals,
            ctx.cfg.selection,
            stage_dir,
            closed_set=ctx.closed_set,
            adaptive=ctx.cfg.pipeline.adaptive_selection,
        )

    key, rnd.select = ctx.run.stage(
        f"round{rnd.number}/select",
        {
            "finals": finals_key,
            "selection": ctx.cfg.selection,
            "adaptive": ctx.cfg.pipeline.adaptive_selection,
            "audit": fingerprint_examples(rnd.items, with_audit=True),
        },
        select,
    )
    rnd.kept = {
        rec["id"]: rec["answer"]
        for rec in read_jsonl(rnd.dir / "select/pseudo_labels.jsonl")
        if rec["kept"]
    }
    return key


# --- 6. evolve ---------------------------------------------------------------------------------


def evolve_adapter(
    ctx: Context,
    rnd: Round,
    kept: dict[str, str],
    labeler: Path | None,
    labeler_key: str | None,
    select_key: str,
) -> str:
    from semievol.stages.evolve import evolve, evolve_train_config, pseudo_labeled

    p = ctx.cfg.pipeline
    pseudo = pseudo_labeled(ctx.data["unlabeled"], kept)
    init = labeler if p.evolve_from == "sft" else None
    train_cfg = evolve_train_config(
        ctx.cfg.train, p.evolve_epochs, p.evolve_learning_rate, rnd.number
    )

    def train(stage_dir: Path) -> dict[str, Any]:
        out = evolve(
            ctx.models.backend,
            ctx.task,
            ctx.labeled,
            pseudo,
            ctx.validation,
            train_cfg,
            stage_dir / "adapter",
            init_adapter=init,
            resolved_config=ctx.resolved,
        )
        ctx.models.trained(stage_dir / "adapter", out.pop("adapter_name"))
        return out

    key, _ = ctx.run.stage(
        f"round{rnd.number}/evolve",
        {
            **ctx.base_key,
            "select": select_key,
            "previous_rounds": labeler_key if p.unlabeled_batches else None,
            "init": labeler_key if init is not None else None,
            "train": result_key(train_cfg),
            "pseudo": fingerprint_examples(pseudo),
        },
        train,
        resumable=True,
    )
    rnd.adapter = rnd.dir / "evolve/adapter"
    return key


# --- 7. evaluate -------------------------------------------------------------------------------


def evaluate_models(ctx: Context, rounds: list[Round]) -> dict[str, dict[str, Any]]:
    """Vanilla, SFT and every round's adapter on the test set, one cached stage per model."""
    from semievol.evaluation import compare_models

    models: list[tuple[str, str, Path | None, str | None]] = [("Vanilla", "vanilla", None, None)]
    if ctx.sft_dir is not None:
        models.append(("SFT", "sft", ctx.sft_dir, ctx.sft_key))
    for rnd in rounds:
        label = "SemiEvol" if len(rounds) == 1 else f"SemiEvol round {rnd.number}"
        models.append((label, f"round{rnd.number}", rnd.adapter, rnd.key))
    metrics: dict[str, dict[str, Any]] = {}
    for label, slug, path, key in models:

        def evaluate(
            stage_dir: Path, label: str = label, path: Path | None = path
        ) -> dict[str, Any]:
            return compare_models(
                ctx.models.backend,
                ctx.task,
                ctx.data["test"],
                {label: ctx.models.adapter(path)},
                stage_dir,
                max_new_tokens=ctx.cfg.eval.max_new_tokens,
                resume=True,
                chunk_size=4 * ctx.chunk,  # bigger chunks bucket better; eval is cheap to redo
            )[label]

        _, metrics[label] = ctx.run.stage(
            f"eval/{slug}",
            {
                "model": ctx.base_key["model"],
                "task": ctx.cfg.task,
                "prompts": ctx.base_key["prompts"],
                "adapter": key,
                "test": fingerprint_examples(ctx.data["test"]),
                "max_new_tokens": ctx.cfg.eval.max_new_tokens,
            },
            evaluate,
            resumable=True,
        )
    return metrics
