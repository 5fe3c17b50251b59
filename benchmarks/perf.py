"""Performance benchmark: semievol's pseudo-labeling against a naive implementation of the
reference procedure, the FLOP floor of this machine, training throughput and peak memory.

Run from the repository root:

    python benchmarks/perf.py --adapter runs/bench/suite/headline/SemiEvol/seed0/sft/train/adapter

What it measures, in one process, on the same backend (transformers + PEFT, CPU or CUDA):

1. matmul rate of the device the model runs on (torch, float32 and bfloat16, best of several
   square matmuls: 2048² on CPU, 8192² on CUDA);
2. naive reference procedure on the first ``--items`` unlabeled items: n=4 separate sampled
   generation passes (temperature 1, up to ``--naive-max-new-tokens`` tokens, the engine
   re-created for every pass) and a justification generation per item that shows the 4 answers,
   as the paper's code does;
3. semievol's pseudo-labeling stage (the pipeline's own committee and justification code, default
   members) on the same items, and again on ``--full-items`` items for steady-state throughput;
4. the FLOP floor of the work each does: 2 × P × prompt tokens per forward pass, where P counts
   the transformer's weights except the embedding table (a lookup, no FLOPs) and the output head
   is counted only where logits are computed (2 × vocab × hidden per scored position);
   achieved / floor = floor seconds at the measured matmul rate / measured seconds;
5. LoRA training throughput on ``--train-examples`` labeled rows, against 4 × P_frozen + 6 ×
   P_lora FLOPs per token (frozen weights need the input gradient but no weight gradient;
   LoRA weights need both), plus 4 × vocab × hidden per loss position for the frozen head;
6. peak RSS of every phase (VmHWM, reset per phase), and on a GPU its peak allocated memory.

Tokens/s: the naive reference's prompt + generated tokens; semievol's prompt tokens as the
floor counts them (a shared prefix computed once is credited to every prompt). Positions
computed: the token positions the backend actually ran for each (``positions_computed``:
shared prefixes once, padding included, decode steps), and their ratio, the work ratio.

Pseudo-label accuracy is measured against the unlabeled file's gold answers (audit only).
Results: a table on stdout and ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any


def matmul_gflops(
    dtype_name: str, device: str = "cpu", n: int | None = None, reps: int = 5
) -> float:
    """Best rate of square matmuls on ``device`` (CUDA: after a synchronize, so the kernel is
    timed, not its launch)."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = n or (8192 if device == "cuda" else 2048)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    torch.matmul(a, b)  # warm-up
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def parameter_counts(model: Any) -> dict[str, int]:
    """Weights by role: the embedding table, the output head, everything else (the body)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    head_params = head.numel()
    body = total - emb.numel() - (0 if head is emb else head_params)
    return {"total": total, "embedding": emb.numel(), "head": head_params, "body": body}


def forward_flops(params: dict[str, int], prompt_tokens: int, scored_positions: int) -> float:
    return 2.0 * params["body"] * prompt_tokens + 2.0 * params["head"] * scored_positions


class Phase:
    """Wall time and peak RSS (and peak GPU memory, on a GPU) of a block of work."""

    def __init__(self, name: str, results: dict[str, Any]):
        self.name, self.results = name, results

    def __enter__(self) -> Phase:
        from semievol.resources import reset_peak_gpu, reset_peak_rss

        reset_peak_rss()
        reset_peak_gpu()  # also waits for queued GPU work, so it is not timed here
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        from semievol.resources import peak_gpu_mb, peak_rss_mb

        gpu = peak_gpu_mb()  # synchronizes first
        self.results.setdefault("phases", {})[self.name] = {
            "seconds": round(time.perf_counter() - self.t0, 2),
            "peak_rss_mb": peak_rss_mb(),
            "peak_gpu_mb": gpu,
        }


def accuracy(finals: dict[str, str | None], items: list[Any]) -> float:
    graded = [ex for ex in items if ex.audit_gold is not None]
    return sum(finals.get(ex.id) == ex.audit_gold for ex in graded) / max(1, len(graded))


def load_backend(model_cfg: Any, adapter: str | None) -> Any:
    from semievol.backends.hf import HFBackend

    backend = HFBackend(model_cfg)
    if adapter:
        backend.load_adapter(adapter)
    return backend


def naive_reference(
    model_cfg: Any, adapter: str | None, task: Any, items: list[Any], n: int, max_new: int
) -> dict[str, Any]:
    """n sampled generation passes, a fresh engine each, then a justification generation."""
    from semievol.backends import Sampling
    from semievol.stages.justify import justification_messages

    prompts = [task.messages(ex) for ex in items]
    answers: dict[str, list[str | None]] = {ex.id: [] for ex in items}
    texts: dict[str, list[str]] = {ex.id: [] for ex in items}
    new_tokens = 0
    prompt_tokens = 0
    positions: Counter[str] = Counter()
    t0 = time.perf_counter()
    for p in range(n):
        backend = load_backend(model_cfg, adapter)  # the reference re-creates its engine
        gens = backend.generate(
            prompts,
            samplings=[Sampling(temperature=1.0, seed=p + 1)],
            max_new_tokens=max_new,
            desc=f"pass {p + 1}",
        )
        prompt_tokens += sum(len(backend.tokens(backend.render(m))) for m in prompts)
        for ex, (g,) in zip(items, gens, strict=True):
            answers[ex.id].append(task.extract(g.text, ex))
            texts[ex.id].append(g.text)
            new_tokens += len(g.token_ids)
        positions.update(backend.positions_computed)
        del backend
    backend = load_backend(model_cfg, adapter)
    justify_prompts = [
        justification_messages(task, ex, [t[:400] or "(empty)" for t in texts[ex.id]])
        for ex in items
    ]
    gens = backend.generate(justify_prompts, max_new_tokens=max_new, desc="justification")
    prompt_tokens += sum(len(backend.tokens(backend.render(m))) for m in justify_prompts)
    finals: dict[str, str | None] = {}
    for ex, (g,) in zip(items, gens, strict=True):
        new_tokens += len(g.token_ids)
        final = task.extract(g.text, ex)
        if final is None:  # no clear final answer: majority of the sampled ones
            votes = Counter(a for a in answers[ex.id] if a is not None)
            final = votes.most_common(1)[0][0] if votes else None
        finals[ex.id] = final
    positions.update(backend.positions_computed)
    seconds = time.perf_counter() - t0
    return {
        "items": len(items),
        "seconds": round(seconds, 2),
        "items_per_second": len(items) / seconds,
        "accuracy": accuracy(finals, items),
        "engine_loads": n + 1,
        "prompt_tokens": prompt_tokens,
        "generated_tokens": new_tokens,
        "tokens_per_second": (prompt_tokens + new_tokens) / seconds,
        "positions_computed": dict(positions),
    }


def semievol_labeling(
    backend: Any, cfg: Any, task: Any, items: list[Any], params: dict[str, int], gflops: float
) -> dict[str, Any]:
    """The pipeline's committee + justification stages, timed, with their FLOP floor."""
    from semievol.pipeline import inference_chunk
    from semievol.stages.committee import collect_votes, committee_members
    from semievol.stages.justify import (
        describe_candidate,
        justification_messages,
        resolve_committee,
    )

    members = committee_members(cfg.committee, in_context=True, collaborative=True)
    before = Counter(backend.positions_computed)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        t0 = time.perf_counter()
        logs = collect_votes(
            backend,
            task,
            items,
            members,
            demos_for=lambda m, ex: [],
            adapter_for=lambda m: backend.active,
            stage_dir=stage / "committee",
            chunk_size=inference_chunk(cfg.model),
            max_new_tokens=cfg.committee.max_new_tokens,
        )
        t_votes = time.perf_counter() - t0
        votes = [log.records for log in logs]
        finals = resolve_committee(
            backend,
            task,
            items,
            votes,
            justify=cfg.committee.justify,
            labeler=backend.active,
            stage_dir=stage / "justify",
            chunk_size=inference_chunk(cfg.model),
            max_new_tokens=cfg.committee.max_new_tokens,
        )
        seconds = time.perf_counter() - t0
    disputed = [f for f in finals if f["source"] not in ("unanimous", "single")]
    by_id = {ex.id: ex for ex in items}
    passes = len({m.forward_pass for m in members})
    tokens = passes * sum(len(backend.tokens(backend.render(task.messages(ex)))) for ex in items)
    tokens += sum(
        len(
            backend.tokens(
                backend.render(
                    justification_messages(
                        task,
                        by_id[f["id"]],
                        [describe_candidate(task, by_id[f["id"]], v[f["id"]]) for v in votes],
                    )
                )
            )
        )
        for f in disputed
    )
    positions = passes * len(items) + len(disputed)
    flops = forward_flops(params, tokens, positions)
    floor_seconds = flops / (gflops * 1e9)
    return {
        "items": len(items),
        "members": [m.spec() for m in members],
        "forward_passes_per_item": passes,
        "justified": len(disputed),
        "seconds": round(seconds, 2),
        "vote_seconds": round(t_votes, 2),
        "items_per_second": len(items) / seconds,
        "accuracy": accuracy({f["id"]: f["answer"] for f in finals}, items),
        "prompt_tokens": tokens,
        "tokens_per_second": tokens / seconds,
        "positions_computed": dict(backend.positions_computed - before),
        "gflop": flops / 1e9,
        "floor_seconds": round(floor_seconds, 3),
        "fraction_of_floor": floor_seconds / seconds,
    }


def batch_sweep(
    backend: Any, task: Any, items: list[Any], sizes: list[int | str]
) -> dict[str, float]:
    """Items/s of first-token scoring at each inference batch size (same items); 'auto' is
    the measured token budget."""
    prompts = [task.messages(ex) for ex in items]
    choices = [task.choices(ex) for ex in items]
    backend.score_choices(prompts[:8], choices[:8], progress=False)  # warm-up
    original = backend.config.batch_size
    speeds = {}
    for size in sizes:
        backend.config.batch_size = size
        t0 = time.perf_counter()
        backend.score_choices(prompts, choices, progress=False)
        speeds[str(size)] = len(items) / (time.perf_counter() - t0)
    backend.config.batch_size = original
    return speeds


def training_throughput(
    backend: Any, cfg: Any, task: Any, labeled: list[Any], params: dict[str, int], gflops: float
) -> dict[str, Any]:
    from semievol.training import sft_examples

    train_cfg = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        result = backend.train(sft_examples(task, labeled), train_cfg, Path(tmp) / "adapter")
    lora = sum(p.numel() for n, p in backend.peft.named_parameters() if "lora_" in n)
    lora_per_adapter = lora // max(1, len(backend.adapters))
    loss_positions = sum(
        len(backend._reply_tokens(task.target(ex, ex.answer))) + 1 for ex in labeled
    )
    flops = (
        4.0 * params["body"] * result.tokens
        + 6.0 * lora_per_adapter * result.tokens
        + 4.0 * params["head"] * loss_positions
    )
    floor_seconds = flops / (gflops * 1e9)
    return {
        "examples": len(labeled),
        "tokens": result.tokens,
        "seconds": round(result.seconds, 2),
        "tokens_per_second": result.tokens / result.seconds,
        "lora_parameters": lora_per_adapter,
        "gflop": flops / 1e9,
        "floor_seconds": round(floor_seconds, 2),
        "fraction_of_floor": floor_seconds / result.seconds,
    }


def training_memory_probe(
    backend: Any, cfg: Any, rows_list: tuple[int, ...] = (2, 4, 8, 16), length: int = 128
) -> dict[str, Any]:
    """Peak RSS above the resting RSS for one LoRA forward + backward pass over ``rows`` ×
    ``length`` random tokens (loss on the last 4): what one training batch needs beyond the
    weights. The slope over batch sizes is the activation memory per token."""
    import gc

    import torch

    from semievol.resources import current_rss_mb, peak_rss_mb, reset_peak_rss

    backend._train_only(backend._add_fresh_adapter(dataclasses.replace(cfg.train)))
    net = backend.peft
    net.train()
    vocab = int(backend.model.get_input_embeddings().weight.shape[0])
    gen = torch.Generator().manual_seed(0)
    peaks = {}
    for rows in rows_list:
        batch = [(torch.randint(vocab, (length,), generator=gen).tolist(), 4) for _ in range(rows)]
        net.zero_grad(set_to_none=True)
        gc.collect()
        # reset first: the high-water mark then starts at the RSS read as "rest", never below
        reset_peak_rss()
        rest = current_rss_mb() or 0
        backend._batch_loss(net, batch).backward()
        peaks[rows] = round((peak_rss_mb() or 0) - rest, 1)
    net.zero_grad(set_to_none=True)
    net.eval()
    first, last = rows_list[0], rows_list[-1]
    per_token = (peaks[last] - peaks[first]) / ((last - first) * length)
    return {
        "length": length,
        "peak_above_rest_mib_by_rows": peaks,
        "mib_per_token": round(per_token, 3),
        "kib_per_token_per_layer": round(
            per_token * 1024 / backend.model.config.num_hidden_layers, 1
        ),
    }


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fpb.yaml")
    parser.add_argument("--adapter", help="SFT adapter that labels (default: the base model)")
    parser.add_argument("--model", help="model name or directory (default: the bundled SmolLM2)")
    parser.add_argument("--items", type=int, default=64, help="items for the naive comparison")
    parser.add_argument("--full-items", type=int, default=0, help="semievol on this many too")
    parser.add_argument("--naive-max-new-tokens", type=int, default=1024)
    parser.add_argument("--naive-passes", type=int, default=4)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--train-examples", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="any config override, e.g. --set model.dtype=bfloat16 (repeatable)",
    )
    parser.add_argument(
        "--batch-sweep",
        default="",
        help="comma-separated inference batch sizes to time first-token scoring with",
    )
    parser.add_argument(
        "--memory-probe",
        action="store_true",
        help="only measure training memory: peak RSS of one batch at several batch sizes",
    )
    parser.add_argument("--out", default="benchmarks/results/perf.json")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="instead of timing: torch-profile pseudo-labeling and training, write op tables",
    )
    args = parser.parse_args(argv)

    import torch

    from semievol.config import load_config
    from semievol.data import load_split
    from semievol.tasks import build_task

    overrides: dict[str, Any] = {}
    if args.model:
        overrides["model.name"] = args.model
    if args.batch_size:
        overrides["model.batch_size"] = args.batch_size
    from semievol.config import parse_cli_value

    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_cli_value(value)
    cfg = load_config(args.config, overrides)
    task = build_task(cfg.task)
    unlabeled = load_split(cfg.data, "unlabeled", task)
    labeled = load_split(cfg.data, "labeled", task)
    results: dict[str, Any] = {
        "command": "python benchmarks/perf.py " + " ".join(argv),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
    with Phase("load model + adapter", results):
        backend = load_backend(cfg.model, args.adapter)
    # the floor is that of the device the model runs on
    results["matmul_device"] = backend.device.type
    rates = {d: matmul_gflops(d, backend.device.type) for d in ("float32", "bfloat16")}
    results["matmul_gflops"] = rates
    if cfg.model.batch_size == "auto":
        results["inference_batch"] = f"auto: {backend.batch_token_budget()} tokens per batch"
    else:
        results["inference_batch"] = f"{cfg.model.batch_size} prompts per batch"
    params = parameter_counts(backend.model)
    results["parameters"] = params
    compute_dtype = "bfloat16" if backend.autocast or backend.dtype == torch.bfloat16 else "float32"
    results["compute_dtype"] = compute_dtype
    gflops = rates[compute_dtype]

    if args.memory_probe:
        results["training_memory"] = training_memory_probe(backend, cfg)
        write_results(Path(args.out), results)
        print(json.dumps(results["training_memory"], indent=1))
        return 0
    items = unlabeled[: args.items]
    # Warm-up on other items: the first forward passes of a process pay one-off kernel set-up
    # (oneDNN primitives for bf16), which a real stage amortises over thousands of items.
    warm = unlabeled[-8:]
    backend.score_choices(
        [task.messages(ex) for ex in warm], [task.choices(ex) for ex in warm], progress=False
    )
    if args.profile:
        return profile_phases(
            backend,
            cfg,
            task,
            items,
            labeled[: args.train_examples],
            params,
            gflops,
            Path(args.profile),
        )
    with Phase("semievol pseudo-labeling (same items)", results):
        results["semievol"] = semievol_labeling(backend, cfg, task, items, params, gflops)
    if args.batch_sweep:
        results["batch_sweep"] = batch_sweep(
            backend,
            task,
            unlabeled[:256],
            [b if b == "auto" else int(b) for b in args.batch_sweep.split(",")],
        )
    if args.full_items:
        with Phase(f"semievol pseudo-labeling ({args.full_items} items)", results):
            results["semievol_full"] = semievol_labeling(
                backend, cfg, task, unlabeled[: args.full_items], params, gflops
            )
    with Phase("training (1 epoch)", results):
        results["training"] = training_throughput(
            backend, cfg, task, labeled[: args.train_examples], params, gflops
        )
    if not args.skip_naive:
        del backend
        with Phase("naive reference procedure", results):
            results["naive"] = naive_reference(
                cfg.model, args.adapter, task, items, args.naive_passes, args.naive_max_new_tokens
            )
    write_results(Path(args.out), results)
    print(report(results))
    return 0


def profile_phases(
    backend: Any,
    cfg: Any,
    task: Any,
    items: list[Any],
    labeled: list[Any],
    params: dict[str, int],
    gflops: float,
    out: Path,
) -> int:
    """torch.profiler op tables (self CPU time) of pseudo-labeling and of training."""
    from torch.profiler import ProfilerActivity, profile

    out.mkdir(parents=True, exist_ok=True)
    for name, work in [
        ("pseudo_labeling", lambda: semievol_labeling(backend, cfg, task, items, params, gflops)),
        ("training", lambda: training_throughput(backend, cfg, task, labeled, params, gflops)),
    ]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            work()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
        (out / f"{name}.txt").write_text(table + "\n")
        print(f"## {name}\n{table}")
    return 0


def report(r: dict[str, Any]) -> str:
    lines = [
        f"matmul: {r['matmul_gflops']['float32']:.0f} GFLOP/s float32, "
        f"{r['matmul_gflops']['bfloat16']:.0f} GFLOP/s bfloat16 ({r['matmul_device']}); "
        f"compute dtype {r['compute_dtype']}",
        f"parameters: {r['parameters']['total'] / 1e6:.1f} M (body {r['parameters']['body'] / 1e6:.1f} M)",
        f"inference batches: {r.get('inference_batch', '?')}",
        "",
        "| pseudo-labeling | items | seconds | items/s | tokens/s | positions computed "
        "| pseudo-label accuracy | FLOP floor reached |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in [
        ("naive", "naive reference (4 sampled passes + justification)"),
        ("semievol", "semievol (same items)"),
        ("semievol_full", "semievol (more items)"),
    ]:
        if key in r:
            x = r[key]
            floor = f"{x['fraction_of_floor'] * 100:.0f} %" if "fraction_of_floor" in x else "—"
            computed = sum(x.get("positions_computed", {}).values()) or "—"
            lines.append(
                f"| {label} | {x['items']} | {x['seconds']:.1f} | {x['items_per_second']:.2f} "
                f"| {x['tokens_per_second']:.0f} | {computed} | {x['accuracy'] * 100:.1f} % "
                f"| {floor} |"
            )
    if "naive" in r:
        speedup = r["semievol"]["items_per_second"] / r["naive"]["items_per_second"]
        lines.append(f"\nspeed-up on the same items: {speedup:.1f}×")
        naive_work = sum(r["naive"].get("positions_computed", {}).values())
        semievol_work = sum(r["semievol"].get("positions_computed", {}).values())
        if naive_work and semievol_work:
            lines.append(
                f"work ratio (token positions the model ran, padding included): "
                f"{naive_work / semievol_work:.1f}×"
            )
    if "batch_sweep" in r:
        sweep = ", ".join(f"{b}: {v:.1f}" for b, v in r["batch_sweep"].items())
        lines.append(f"\nfirst-token scoring items/s by batch size: {sweep}")
    t = r["training"]
    lines += [
        "",
        f"training: {t['tokens_per_second']:.0f} tokens/s ({t['tokens']} tokens in {t['seconds']:.1f} s),"
        f" {t['fraction_of_floor'] * 100:.0f} % of the FLOP floor",
        "",
        "| phase | seconds | peak RSS MiB | peak GPU MiB |",
        "|---|---|---|---|",
    ]
    for name, p in r["phases"].items():
        gpu = p.get("peak_gpu_mb")
        lines.append(
            f"| {name} | {p['seconds']:.1f} | {p['peak_rss_mb']} | {'—' if gpu is None else gpu} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
