"""The CPU benchmark suite: SemiEvol vs Vanilla, SFT and self-training, ablations, θ and
committee-size grids, with SmolLM2-135M-Instruct on the paper's splits.

Run from the repository root (paths in configs/ are relative to it):

    python benchmarks/cpu_suite.py                       # every experiment, in order
    python benchmarks/cpu_suite.py --experiments headline --seeds 0,1,2
    python benchmarks/cpu_suite.py --experiments theta --variants "θ=1.0"
    python benchmarks/cpu_suite.py --report-only         # tables and plots from finished runs

Every run is a ``semievol run`` into ``<root>/<experiment>/<variant>/seed<s>`` with one shared
stage cache, so runs reuse each other's stages (the SFT adapter of seed s serves every variant
of seed s) and an interrupted suite resumes where it stopped. Runs execute one at a time: two
torch processes on a small CPU slow each other several-fold. Tables go to
``<out>/cpu_suite.md`` (and stdout), raw numbers to ``<out>/cpu_suite.json``, plots to
``<out>/*.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # perf.py, beside this script
from perf import matmul_gflops  # noqa: E402


@dataclass
class Variant:
    name: str
    """Row label in the tables."""
    overrides: list[str] = field(default_factory=list)
    """Extra ``semievol run`` flags."""


@dataclass
class Experiment:
    name: str
    config: str
    variants: list[Variant]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    """Flags every variant of this experiment gets (e.g. data subsets)."""


SELF_TRAINING = [
    # Pseudo-label with the SFT model alone, keep every answer, retrain: no kNN demonstrations,
    # no committee or justification, no confidence selection.
    "--pipeline.in_context",
    "false",
    "--pipeline.collaborative",
    "false",
    "--pipeline.adaptive_selection",
    "false",
    "--committee.members",
    "[adapter=sft demos=none]",
]


def experiments(seeds: list[int]) -> list[Experiment]:
    fpb = "configs/fpb.yaml"
    semievol = Variant("SemiEvol")
    subset = ["--data.labeled_limit", "200", "--data.unlabeled_limit", "400"]
    subset += ["--data.test_limit", "300"]
    return [
        Experiment("headline", fpb, [semievol, Variant("Self-training", SELF_TRAINING)], seeds),
        # Few labels, where semi-supervised learning should matter most: the first 80 labeled
        # rows (64 for training, 16 for validation), the same unlabeled and test data.
        Experiment(
            "low_label",
            fpb,
            [semievol, Variant("Self-training", SELF_TRAINING)],
            seeds,
            ["--data.labeled_limit", "80"],
        ),
        Experiment(
            "ablations",
            fpb,
            [
                semievol,
                Variant("w/o IWP", ["--pipeline.in_weight", "false"]),
                Variant("w/o ICP", ["--pipeline.in_context", "false"]),
                Variant("w/o CL", ["--pipeline.collaborative", "false"]),
                Variant("w/o AS", ["--pipeline.adaptive_selection", "false"]),
            ],
            seeds[:1],
        ),
        Experiment(
            "theta",
            fpb,
            [
                Variant(f"θ={t}", ["--selection.theta", str(t)])
                for t in ("0.25", "0.5", "0.75", "1.0")
            ],
            seeds[:1],
        ),
        Experiment(
            "committee_size",
            fpb,
            [
                Variant("n=1", ["--committee.members", "[demos=none]"]),
                Variant("n=2", ["--committee.members", "[demos=none, demos=knn]"]),
                semievol,
                Variant(
                    "n=5",
                    [
                        "--committee.members",
                        "[demos=none, demos=knn, demos=none temperature=1 seed=1, "
                        "demos=knn_next, demos=none temperature=1 seed=2]",
                    ],
                ),
            ],
            seeds[:1],
        ),
        # Issue 5: dropout masks were the largest cost of LoRA training; does dropping them
        # cost validation accuracy? (0.05 is the default the headline measured.)
        Experiment(
            "lora_dropout",
            fpb,
            [
                Variant("LoRA dropout 0.05", ["--train.lora_dropout", "0.05"]),
                Variant("LoRA dropout 0", ["--train.lora_dropout", "0"]),
            ],
            seeds,
        ),
        Experiment("arc_subset", "configs/arc.yaml", [semievol], seeds[:1], subset),
        Experiment("mmlu_subset", "configs/mmlu.yaml", [semievol], seeds[:1], subset),
    ]


def run_dir(root: Path, exp: Experiment, variant: Variant, seed: int) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in variant.name)
    return root / exp.name / slug / f"seed{seed}"


def command(root: Path, exp: Experiment, variant: Variant, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "semievol",
        "run",
        "--config",
        exp.config,
        "--pipeline.run_dir",
        str(run_dir(root, exp, variant, seed)),
        "--pipeline.stage_cache",
        str(root / "stage_cache"),
        "--train.seed",
        str(seed),
        "--model.seed",
        str(seed),
        *exp.overrides,
        *variant.overrides,
    ]


def execute(root: Path, exp: Experiment, variant: Variant, seed: int) -> None:
    """Run (or resume) one pipeline run; its wall time is kept in ``suite_run.json``."""
    out = run_dir(root, exp, variant, seed)
    done = out / "suite_run.json"
    if done.is_file():
        print(f"[{exp.name} / {variant.name} / seed {seed}] done earlier, skipped", flush=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    cmd = command(root, exp, variant, seed)
    print(f"[{exp.name} / {variant.name} / seed {seed}] {shlex.join(cmd[2:])}", flush=True)
    # The machine's matmul rate before and after: wall times are only comparable between
    # runs whose machines (or virtual machines, whose speed drifts) ran at similar rates.
    rate_before = matmul_gflops("float32")
    t0 = time.perf_counter()
    with (out / "suite.log").open("a", encoding="utf-8") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if code != 0:
        sys.exit(f"run failed (exit {code}); see {out / 'suite.log'}")
    rates = [round(rate_before, 1), round(matmul_gflops("float32"), 1)]
    record = {"command": shlex.join(cmd[2:]), "wall_seconds": seconds, "matmul_gflops": rates}
    done.write_text(json.dumps(record))
    print(f"  {seconds / 60:.1f} min (float32 matmul {rates[0]} / {rates[1]} GFLOP/s)", flush=True)


# --- collecting results ------------------------------------------------------------------------


def load_run(path: Path) -> dict | None:
    manifest = path / "manifest.json"
    if not (path / "suite_run.json").is_file() or not manifest.is_file():
        return None
    stages = json.loads(manifest.read_text())["stages"]
    run = json.loads((path / "suite_run.json").read_text())
    return {
        "path": str(path),
        "wall_seconds": run["wall_seconds"],
        "matmul_gflops": run.get("matmul_gflops"),  # before / after; absent before session 13
        "command": run["command"],
        "stages": stages,
        "accuracy": {
            name.split("/")[1]: entry["outputs"]["accuracy"]
            for name, entry in stages.items()
            if name.startswith("eval/")
        },
        "select": stages.get("round1/select", {}).get("outputs", {}),
    }


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def audit_cells(select: dict) -> list[str]:
    audit = select.get("audit") or {}
    if not audit:
        return ["—"] * 4

    def pct(part: str) -> str:
        a = audit.get(part, {})
        return f"{100 * a['accuracy']:.1f}" if a.get("n") else "—"

    return [str(select.get("kept", "—")), pct("kept"), pct("rejected"), pct("all")]


def collect(root: Path, exps: list[Experiment]) -> dict:
    results: dict = {}
    for exp in exps:
        for variant in exp.variants:
            for seed in exp.seeds:
                run = load_run(run_dir(root, exp, variant, seed))
                if run is not None:
                    results.setdefault(exp.name, {}).setdefault(variant.name, {})[seed] = run
    return results


def best_validation(entry: dict | None) -> str:
    history = (entry or {}).get("outputs", {}).get("history", [])
    scored = [(h["val_accuracy"], -h["epoch"], h["epoch"]) for h in history if "val_accuracy" in h]
    if not scored:
        return "—"
    acc, _, epoch = max(scored)
    return f"{100 * acc:.1f} (epoch {epoch})"


def headline_table(results: dict) -> list[str]:
    runs = results.get("headline", {})
    semi, st = runs.get("SemiEvol", {}), runs.get("Self-training", {})
    if not semi:
        return []
    seeds = sorted(semi)
    lines = ["| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |"]
    lines.append("|---" * (len(seeds) + 2) + "|")
    rows = [
        ("Vanilla", semi, "vanilla"),
        ("SFT", semi, "sft"),
        ("Self-training", st, "round1"),
        ("SemiEvol", semi, "round1"),
    ]
    for label, runs_, key in rows:
        vals = [runs_[s]["accuracy"].get(key) if s in runs_ else None for s in seeds]
        cells = [f"{100 * v:.1f}" if v is not None else "—" for v in vals]
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {mean_std([v for v in vals if v is not None])} |"
        )
    lines += ["", "Validation accuracy (held-out labeled rows) of the epoch each stage kept:", ""]
    lines += ["| stage | " + " | ".join(f"seed {s}" for s in seeds) + " |"]
    lines.append("|---" * (len(seeds) + 1) + "|")
    for label, runs_, stage in (
        ("SFT", semi, "sft/train"),
        ("Self-training evolve", st, "round1/evolve"),
        ("SemiEvol evolve", semi, "round1/evolve"),
    ):
        cells = [
            best_validation(runs_[s]["stages"].get(stage)) if s in runs_ else "—" for s in seeds
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    diffs = [
        semi[s]["accuracy"]["round1"] - semi[s]["accuracy"]["sft"]
        for s in seeds
        if "round1" in semi[s]["accuracy"] and "sft" in semi[s]["accuracy"]
    ]
    lines.append("")
    lines.append(f"SemiEvol − SFT per seed: {', '.join(f'{100 * d:+.1f}' for d in diffs)}")
    if len(diffs) > 1:
        sft_std = statistics.stdev([semi[s]["accuracy"]["sft"] for s in seeds])
        lines.append(
            f"(mean {100 * statistics.mean(diffs):+.1f} points; 2 × SFT seed std ="
            f" {200 * sft_std:.1f} points)"
        )
    return lines


def variants_table(results: dict, name: str, first_col: str) -> list[str]:
    runs = results.get(name, {})
    if not runs:
        return []
    lines = [
        f"| {first_col} | seeds | test accuracy | SFT | kept | kept correct | rejected correct"
        " | all correct | wall min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, by_seed in runs.items():
        seeds = sorted(by_seed)
        acc = [by_seed[s]["accuracy"].get("round1") for s in seeds]
        sft = [by_seed[s]["accuracy"].get("sft") for s in seeds]
        first = by_seed[seeds[0]]
        wall = statistics.mean(by_seed[s]["wall_seconds"] for s in seeds) / 60
        lines.append(
            f"| {variant} | {','.join(map(str, seeds))} | "
            f"{mean_std([a for a in acc if a is not None])} | "
            f"{mean_std([a for a in sft if a is not None])} | "
            + " | ".join(audit_cells(first["select"]))
            + f" | {wall:.1f} |"
        )
    return lines


def _best_val(run: dict, stage: str) -> float | None:
    history = run["stages"].get(stage, {}).get("outputs", {}).get("history", [])
    scored = [h["val_accuracy"] for h in history if "val_accuracy" in h]
    return max(scored) if scored else None


def validation_table(results: dict, name: str) -> list[str]:
    """Per variant: the validation accuracy SFT and evolve kept (the numbers a default is
    chosen on), then test accuracy and training time (reported, never chosen on)."""
    runs = results.get(name, {})
    if not runs:
        return []
    lines = [
        "| variant | seeds | SFT validation | evolve validation | SFT test | SemiEvol test"
        " | SFT train s | evolve train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, by_seed in runs.items():
        seeds = sorted(by_seed)
        cells = []
        for values in (
            [_best_val(by_seed[s], "sft/train") for s in seeds],
            [_best_val(by_seed[s], "round1/evolve") for s in seeds],
            [by_seed[s]["accuracy"].get("sft") for s in seeds],
            [by_seed[s]["accuracy"].get("round1") for s in seeds],
        ):
            cells.append(mean_std([v for v in values if v is not None]))
        times = []
        for stage in ("sft/train", "round1/evolve"):
            vals = [by_seed[s]["stages"].get(stage, {}).get("seconds") for s in seeds]
            vals = [v for v in vals if v]
            times.append(f"{statistics.mean(vals):.0f}" if vals else "—")
        lines.append(
            f"| {variant} | {','.join(map(str, seeds))} | " + " | ".join(cells + times) + " |"
        )
    return lines


def audit_table(results: dict) -> list[str]:
    lines = [
        "| experiment | variant | seed | kept | kept correct | rejected correct | all correct"
        " | agreement | kept per class |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for exp, runs in results.items():
        for variant, by_seed in runs.items():
            for seed, run in sorted(by_seed.items()):
                sel = run["select"]
                if not sel:
                    continue
                agree = sel.get("agreement_rate")
                lines.append(
                    f"| {exp} | {variant} | {seed} | "
                    + " | ".join(audit_cells(sel))
                    + f" | {'—' if agree is None else f'{100 * agree:.1f}'} |"
                    f" {json.dumps(sel.get('kept_by_class', {}))} |"
                )
    return lines


def stage_time_table(results: dict) -> list[str]:
    runs = results.get("headline", {}).get("SemiEvol", {})
    if not runs:
        return []
    names = list(next(iter(runs.values()))["stages"])
    lines = ["| stage | " + " | ".join(f"seed {s}" for s in sorted(runs)) + " |"]
    lines.append("|---" * (len(runs) + 1) + "|")
    for name in names:
        cells = [f"{runs[s]['stages'].get(name, {}).get('seconds', 0):.0f} s" for s in sorted(runs)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    walls = [f"{runs[s]['wall_seconds'] / 60:.1f} min" for s in sorted(runs)]
    lines.append("| **wall time of the run** | " + " | ".join(walls) + " |")
    rates = [runs[s].get("matmul_gflops") for s in sorted(runs)]
    if any(rates):
        cells = [f"{r[0]:.0f} / {r[1]:.0f}" if r else "—" for r in rates]
        lines.append("| float32 matmul GFLOP/s, before / after | " + " | ".join(cells) + " |")
    return lines


# --- plots -------------------------------------------------------------------------------------


def pyplot():
    """matplotlib's pyplot on the file-only backend (ImportError without the bench extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_theta(results: dict, out: Path) -> Path | None:
    plt = pyplot()

    semi = results.get("headline", {}).get("SemiEvol", {})
    grid = results.get("theta", {})
    if not semi and not grid:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, run in sorted(semi.items()):
        rows = run["select"].get("audit", {}).get("accuracy_vs_theta", [])
        if rows:
            ax.plot(
                [r["theta"] for r in rows],
                [100 * r["accuracy"] for r in rows],
                "--",
                alpha=0.7,
                label=f"pseudo-label precision (unlabeled audit), seed {seed}",
            )
    points = sorted(
        (float(v.split("=")[1]), 100 * run["accuracy"]["round1"])
        for v, by_seed in grid.items()
        for run in by_seed.values()
        if "round1" in run["accuracy"]
    )
    if points:
        ax.plot(*zip(*points, strict=True), "o-", color="black", label="SemiEvol test accuracy")
        sft = [100 * run["accuracy"]["sft"] for by in grid.values() for run in by.values()]
        ax.axhline(statistics.mean(sft), color="gray", lw=1, label="SFT test accuracy")
    ax.set_xlabel("θ (fraction of pseudo-labels kept)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title("fpb, SmolLM2-135M-Instruct")
    fig.tight_layout()
    path = out / "accuracy_vs_theta.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_entropy(results: dict, out: Path) -> Path | None:
    """Entropy of the answer distribution on test items, like the paper's Fig. 4."""
    plt = pyplot()

    semi = results.get("headline", {}).get("SemiEvol", {})
    if not semi:
        return None
    run = Path(semi[min(semi)]["path"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, slug in (("Vanilla", "vanilla"), ("SFT", "sft"), ("SemiEvol", "round1")):
        files = list((run / "eval" / slug).glob("predictions_*.jsonl"))
        if not files:
            continue
        ent = [json.loads(line)["entropy"] for line in files[0].read_text().splitlines()]
        ax.hist(ent, bins=30, alpha=0.5, label=f"{label} (mean {statistics.mean(ent):.2f})")
    ax.set_xlabel("entropy of the option distribution (nats)")
    ax.set_ylabel("test items")
    ax.legend()
    ax.set_title(f"fpb test predictions, seed {min(semi)}")
    fig.tight_layout()
    path = out / "entropy_distributions.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(root: Path, exps: list[Experiment], out: Path, argv: list[str]) -> str:
    results = collect(root, exps)
    out.mkdir(parents=True, exist_ok=True)
    sections = [
        "# CPU suite results",
        "",
        f"Command: `python benchmarks/cpu_suite.py {shlex.join(argv)}`",
        "Accuracies in %, test split; mean ± sample std over seeds.",
        "",
        "## fpb headline",
        *headline_table(results),
        "",
        "### Stage times of the SemiEvol runs",
        *stage_time_table(results),
    ]
    dropout = validation_table(results, "lora_dropout")
    if dropout:
        sections += ["", "## fpb LoRA dropout (validation decides; test reported)", *dropout]
    for name, title, col in (
        ("low_label", "fpb with 80 labeled rows (64 train / 16 validation)", "variant"),
        ("ablations", "fpb ablations", "variant"),
        ("theta", "fpb θ grid", "θ"),
        ("committee_size", "fpb committee size", "committee"),
        ("arc_subset", "arc subset (200 labeled / 400 unlabeled / 300 test)", "variant"),
        ("mmlu_subset", "mmlu subset (200 labeled / 400 unlabeled / 300 test)", "variant"),
    ):
        table = variants_table(results, name, col)
        if table:
            sections += ["", f"## {title}", *table]
    sections += ["", "## Pseudo-label audit of every run (unlabeled gold, audit only)"]
    sections += audit_table(results)
    plots = []
    try:
        plots = [p for p in (plot_theta(results, out), plot_entropy(results, out)) if p]
    except ImportError:
        sections += ["", "(plots skipped: matplotlib is not installed)"]
    sections += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    text = "\n".join(sections) + "\n"
    (out / "cpu_suite.md").write_text(text, encoding="utf-8")
    (out / "cpu_suite.json").write_text(json.dumps(results, indent=1, default=str))
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="", help="comma-separated names (default: all)")
    parser.add_argument("--variants", default="", help="comma-separated row labels (default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--root", default="runs/bench/suite")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    exps = experiments(seeds)
    wanted = [e for e in args.experiments.split(",") if e]
    unknown = set(wanted) - {e.name for e in exps}
    if unknown:
        parser.error(f"unknown experiments {sorted(unknown)}; have {[e.name for e in exps]}")
    chosen = [e for e in exps if not wanted or e.name in wanted]
    wanted_v = [v for v in args.variants.split(",") if v]
    unknown = set(wanted_v) - {v.name for e in chosen for v in e.variants}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)} for the chosen experiments")
    root = Path(args.root)
    if not args.report_only:
        for exp in chosen:
            picked = [v for v in exp.variants if not wanted_v or v.name in wanted_v]
            for variant in picked:  # every seed of the main variant first
                for seed in exp.seeds:
                    execute(root, exp, variant, seed)
    print(report(root, exps, Path(args.out), argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
