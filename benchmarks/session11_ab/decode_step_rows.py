"""Micro-benchmark behind BENCHMARKS.md, issue 5 session 11: the cost of one decode step of the
HF backend against the number of rows it carries (SmolLM2-135M, bf16 autocast, fpb prompts).

    python benchmarks/session11_ab/decode_step_rows.py [--steps 16] [--reps 3]

For each row count: one prompt pass over that many fpb unlabeled prompts (after the shared
prefix), then ``--steps`` greedy decode steps timed; best of ``--reps``. Prints ms per step and
ms per row-step. If a step of 64 rows costs far less than 4 steps of 16, decoding wants more
rows per step than the prompt pass's token budget gives it.
"""

import argparse
import time

from plain_decode import GreedySteps

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", default="4,8,16,32,64,128")
    args = parser.parse_args()
    cfg = load_config("configs/fpb.yaml")
    task = build_task(cfg.task)
    items = load_split(cfg.data, "unlabeled", task)
    b = HFBackend(cfg.model)
    seqs_all = [b.tokens(b.render(task.messages(ex))) for ex in items[:256]]
    print(f"token budget of the prompt pass: {b.batch_token_budget()}")
    print("| rows | prompt pass ms | ms per decode step | ms per row-step |")
    print("|---|---|---|---|")
    with b._inference() as net:
        prefix = b._prefix_cache(net, seqs_all)
        for rows in [int(r) for r in args.rows.split(",")]:
            seqs = seqs_all[:rows]
            best_step, best_prompt = float("inf"), float("inf")
            for _ in range(args.reps):
                t0 = time.perf_counter()
                out, mask = b._prompt_pass(net, seqs, prefix)
                t1 = time.perf_counter()
                decoder = GreedySteps(net, out, mask)
                t2 = time.perf_counter()
                for _ in range(args.steps):
                    decoder.step()
                t3 = time.perf_counter()
                best_prompt = min(best_prompt, t1 - t0)
                best_step = min(best_step, (t3 - t2) / args.steps)
            print(
                f"| {rows} | {best_prompt * 1e3:.0f} | {best_step * 1e3:.1f} "
                f"| {best_step * 1e3 / rows:.2f} |"
            )


if __name__ == "__main__":
    main()
