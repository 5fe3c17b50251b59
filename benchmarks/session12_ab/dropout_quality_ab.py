"""Does the LoRA dropout's new random stream change what training learns? (BENCHMARKS.md,
issue 5 session 12). SFT on the demo task's 40 labeled tickets with the demo's training config
(6 epochs, batch 4, lr 1e-3), then accuracy on its 200 test tickets, for several seeds, with
the dropout of before session 12 (``mask``) and SparseDropout (``positions``), each run in a
fresh process:

    python benchmarks/session12_ab/dropout_quality_ab.py --data runs/demo/data --seeds 0,1,2

``--data``: a demo data folder (``semievol demo`` writes one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from child import run_child  # this folder is on sys.path when a script here runs


def run_arm(arm: str, seed: int, data: str) -> dict:
    import tempfile

    from semievol.backends.hf import HFBackend
    from semievol.config import Config
    from semievol.data import DataConfig, load_split
    from semievol.demo_data import DATA_COLUMNS, TASK
    from semievol.evaluation import evaluate
    from semievol.tasks import TaskConfig, build_task
    from semievol.training import TrainConfig, sft_examples

    if arm == "mask":
        from mask_dropout import use_mask_dropout

        use_mask_dropout()
    paths = {s: str(Path(data) / f"{s}.csv") for s in ("labeled", "test")}
    data_cfg = DataConfig(**paths, **DATA_COLUMNS)
    task = build_task(TaskConfig(**TASK))
    cfg = Config()
    backend = HFBackend(cfg.model)
    train_cfg = TrainConfig(
        epochs=6, learning_rate=1e-3, batch_size=4, val_fraction=0.0, seed=seed, checkpoint_every=0
    )
    labeled = load_split(data_cfg, "labeled", task)
    with tempfile.TemporaryDirectory() as tmp:
        backend.train(sft_examples(task, labeled), train_cfg, Path(tmp) / "a", progress=False)
        metrics, _ = evaluate(backend, task, load_split(data_cfg, "test", task), desc="test")
    return {"arm": arm, "seed": seed, "accuracy": metrics["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/demo/data")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # one run, in the child process
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.seed, args.data)))
        return
    print("| seed | mask (before) | positions (SparseDropout) |")
    print("|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        acc = {}
        for arm in ("mask", "positions"):
            d = run_child(__file__, "--arm", arm, "--seed", str(seed), "--data", args.data)
            acc[arm] = d["accuracy"] * 100
        print(f"| {seed} | {acc['mask']:.1f} % | {acc['positions']:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
