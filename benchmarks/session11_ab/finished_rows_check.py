"""Check behind BENCHMARKS.md, issue 5 session 11: 24 fpb prompts × 3 sampled replies (base
model, temperature 1, up to 48 tokens) generated together and one prompt at a time; prints the
replies that differ (last 60 characters of each) and their count. Before 24f6659 a row that had
ended stayed in a batch of 8+ rows until a quarter of the batch had ended, and the tokens picked
for it meanwhile were appended to its reply.

    python benchmarks/session11_ab/finished_rows_check.py [--show ITEM SAMPLING]

``--show 17 1`` also prints that reply's token ids and log-probabilities both ways.
"""

import argparse

from semievol.backends import Sampling
from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--show", type=int, nargs=2, metavar=("ITEM", "SAMPLING"))
    args = parser.parse_args()
    cfg = load_config("configs/fpb.yaml")
    task = build_task(cfg.task)
    items = load_split(cfg.data, "unlabeled", task)[:24]
    b = HFBackend(cfg.model)
    prompts = [task.messages(e) for e in items]
    samplings = [Sampling(1.0, seed=s) for s in (1, 2, 3)]
    together = b.generate(prompts, samplings=samplings, max_new_tokens=48, progress=False)
    differ = 0
    for i, p in enumerate(prompts):
        single = b.generate([p], samplings=samplings, max_new_tokens=48, progress=False)[0]
        for j in range(3):
            if single[j].token_ids != together[i][j].token_ids:
                differ += 1
                print(
                    i,
                    j,
                    repr(single[j].text[-60:]),
                    "|||",
                    repr(together[i][j].text[-60:]),
                    len(single[j].token_ids),
                    len(together[i][j].token_ids),
                )
    print("differ", differ, "of", 3 * len(prompts))
    if args.show:
        i, j = args.show
        alone = b.generate([prompts[i]], samplings=samplings, max_new_tokens=48, progress=False)
        for name, g in (("alone", alone[0][j]), ("together", together[i][j])):
            print(name, g.token_ids[:8], [round(lp, 4) for lp in g.token_logprobs[:8]])


if __name__ == "__main__":
    main()
