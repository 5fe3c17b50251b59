"""Training A/B on this machine (BENCHMARKS.md, issue 5 session 12): one epoch over fpb labeled
rows at the default training config, after a warm-up epoch of 16 rows, each arm in a fresh
process, arms alternating:

    python benchmarks/session12_ab/training_ab.py --rows 128 --rounds 3 --arms before,retain

Arms: ``before`` (model.retain_freed_memory=false: glibc returns freed memory to the
kernel), ``retain`` (the default), ``sdpa`` (the default with model.attention=sdpa in
training too), ``no-dropout`` (the default with train.lora_dropout=0), ``mask-dropout``
(the default with the LoRA dropout of before this session: a random 16-bit draw and a
comparison per element, then a masked fill; kept in ``mask_dropout.py`` as that arm). At 180e649
the script also had a ``retain+fused`` arm, for a fused LoRA forward that was then dropped.
Prints tokens/s, the process's system CPU time, page faults and peak RSS for each run.
"""

from __future__ import annotations

import argparse
import json

from child import run_child  # this folder is on sys.path when a script here runs
from mask_dropout import use_mask_dropout

ARMS = ("before", "retain", "sdpa", "no-dropout", "mask-dropout")


def run_arm(arm: str, rows: int) -> dict:
    import dataclasses
    import resource
    import tempfile
    from pathlib import Path

    import semievol.backends.hf as hf
    from semievol.config import load_config
    from semievol.data import load_split
    from semievol.tasks import build_task
    from semievol.training import sft_examples

    cfg = load_config("configs/fpb.yaml", {})
    model = dataclasses.replace(
        cfg.model,
        retain_freed_memory=arm != "before",
        attention="sdpa" if arm == "sdpa" else cfg.model.attention,
    )
    if arm == "mask-dropout":
        use_mask_dropout()
    task = build_task(cfg.task)
    examples = sft_examples(task, load_split(cfg.data, "labeled", task)[:rows])
    train_cfg = dataclasses.replace(
        cfg.train,
        epochs=1,
        val_fraction=0.0,
        checkpoint_every=0,
        lora_dropout=0.0 if arm == "no-dropout" else cfg.train.lora_dropout,
    )
    backend = hf.HFBackend(model)
    with tempfile.TemporaryDirectory() as tmp:
        backend.train(examples[:16], train_cfg, Path(tmp) / "warm", progress=False)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as tmp:
        result = backend.train(examples, train_cfg, Path(tmp) / "a", progress=False)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "arm": arm,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 2),
        "tokens_per_second": round(result.tokens / result.seconds, 1),
        "user_s": round(r1.ru_utime - r0.ru_utime, 1),
        "sys_s": round(r1.ru_stime - r0.ru_stime, 1),
        "page_faults": r1.ru_minflt - r0.ru_minflt,
        "peak_rss_gb": round(r1.ru_maxrss / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # one run, in the child process
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.rows)))
        return
    arms = args.arms.split(",")
    print("| round | arm | tokens/s | seconds | sys s | page faults | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for r in range(args.rounds):
        for arm in arms:
            d = run_child(__file__, "--arm", arm, "--rows", str(args.rows))
            print(
                f"| {r + 1} | {arm} | {d['tokens_per_second']} | {d['seconds']} | "
                f"{d['sys_s']} | {d['page_faults']:,} | {d['peak_rss_gb']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
