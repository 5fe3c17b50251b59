"""How training scales from one CPU thread to two (BENCHMARKS.md, issue 5 session 13):

    python benchmarks/session13_ab/thread_scaling.py --rows 96 --rounds 3

Forward + backward over fpb labeled rows at the default config, at ``torch.set_num_threads``
1 and 2, alternating, at batch sizes 16 (the default) and 8. Two single-thread processes that
each train half of every batch (data parallel) could at best reach twice the 1-thread rate at
batch 8; the ratio of that to the 2-thread rate at batch 16 bounds what splitting the work
over processes instead of threads could give on this machine.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from step_setup import epoch_seconds, training_step_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    backend, net, batches16, tokens = training_step_setup(args.rows)
    batches8 = [half for b in batches16 for half in (b[:8], b[8:]) if half]
    rates: dict[tuple[int, int], list[float]] = {}
    epoch_seconds(backend, net, batches16)  # warm-up
    for r in range(args.rounds):
        for threads in (2, 1) if r % 2 == 0 else (1, 2):
            torch.set_num_threads(threads)
            for size, batches in ((16, batches16), (8, batches8)):
                seconds, _ = epoch_seconds(backend, net, batches)
                rates.setdefault((size, threads), []).append(tokens / seconds)
                print(f"round {r} batch {size} threads {threads}: {tokens / seconds:.1f} tok/s")
    mean = {k: statistics.mean(v) for k, v in rates.items()}
    print("\n| batch | 1 thread tok/s | 2 threads tok/s | 2 / 1 |\n|---|---|---|---|")
    for size in (16, 8):
        one, two = mean[(size, 1)], mean[(size, 2)]
        print(f"| {size} | {one:.1f} | {two:.1f} | {two / one:.2f}x |")
    bound = 2 * mean[(8, 1)] / mean[(16, 2)]
    print(
        f"\ntwo 1-thread processes at batch 8 against 2 threads at batch 16: at most {bound:.2f}x"
    )


if __name__ == "__main__":
    main()
