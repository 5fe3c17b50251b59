"""Closed-set scoring A/B (BENCHMARKS.md, issue 5 session 12): the base model scores the fpb
test split's options, as the Vanilla evaluation does, each arm in a fresh process, arms
alternating:

    python benchmarks/session12_ab/scoring_ab.py --rounds 2

Arms: ``before`` (model.retain_freed_memory=false) and ``retain`` (the default).
"""

from __future__ import annotations

import argparse
import json

from child import run_child  # this folder is on sys.path when a script here runs

ARMS = ("before", "retain")


def run_arm(arm: str) -> dict:
    import dataclasses
    import resource
    import time

    from semievol.backends.hf import HFBackend
    from semievol.config import load_config
    from semievol.data import load_split
    from semievol.tasks import build_task

    cfg = load_config("configs/fpb.yaml", {})
    backend = HFBackend(dataclasses.replace(cfg.model, retain_freed_memory=arm == "retain"))
    task = build_task(cfg.task)
    items = load_split(cfg.data, "test", task)
    prompts = [task.messages(ex) for ex in items]
    choices = [task.choices(ex) for ex in items]
    backend.score_choices(prompts[:16], choices[:16], progress=False)  # warm-up
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    backend.score_choices(prompts, choices, progress=False)
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "arm": arm,
        "items": len(items),
        "seconds": round(seconds, 2),
        "items_per_second": round(len(items) / seconds, 2),
        "sys_s": round(r1.ru_stime - r0.ru_stime, 1),
        "page_faults": r1.ru_minflt - r0.ru_minflt,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # one run, in the child process
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm)))
        return
    print("| round | arm | items | seconds | items/s | sys s | page faults |")
    print("|---|---|---|---|---|---|---|")
    for r in range(args.rounds):
        for arm in ARMS:
            d = run_child(__file__, "--arm", arm)
            print(
                f"| {r + 1} | {arm} | {d['items']} | {d['seconds']} | {d['items_per_second']} | "
                f"{d['sys_s']} | {d['page_faults']:,} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
