"""A/B behind BENCHMARKS.md, issue 5 session 11: generation a batch at a time (the decode loop
before this session, with its finished-row fix) against continuous batching with the in-place
KV cache (now), alternating in one process after a warm-up.

    python benchmarks/session11_ab/continuous_batching_ab.py [--workload fpb|reasoning]
        [--items 64] [--max-new-tokens 64] [--pairs 2] [--adapter DIR]

- "batch at a time": ``kv_cache.mergeable`` patched to refuse every cache, which is the
  fallback path: one inference batch (token budget) is read, decoded until its last row ends
  (finished rows leave), then the next, and transformers' ``DynamicLayer`` grows the cache by
  concatenation;
- "continuous": the default path, rows join and leave one pool of up to ``decode_rows``.

Workloads (base model unless --adapter; the default committee's samplings: greedy + 2 at
temperature 1): ``fpb``: fpb unlabeled items in the task's own prompt (short replies, a long
tail); ``reasoning``: arc test questions asking for step-by-step reasoning before the answer
(long replies). Prints seconds, generated tokens, decode steps and mean rows per decode step
per arm and round, and how many replies are token-identical between the arms.
"""

import argparse
import json
import time

from semievol.backends import kv_cache
from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.stages.committee import CommitteeConfig, parse_member
from semievol.tasks import build_task


def reasoning_prompts(n: int) -> list[list[dict[str, str]]]:
    cfg = load_config("configs/arc.yaml")
    task = build_task(cfg.task)
    items = load_split(cfg.data, "test", task)[:n]
    out = []
    for ex in items:
        options = "\n".join(f"{chr(65 + k)}. {o}" for k, o in enumerate(ex.options))
        text = (
            f"{ex.question}\n{options}\n"
            "Explain your reasoning step by step, then end with 'Answer: <letter>'."
        )
        out.append([{"role": "user", "content": text}])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=["fpb", "reasoning"], default="fpb")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--adapter")
    args = parser.parse_args()

    cfg = load_config("configs/fpb.yaml")
    if args.workload == "fpb":
        task = build_task(cfg.task)
        items = load_split(cfg.data, "unlabeled", task)[: args.items]
        prompts = [task.messages(e) for e in items]
    else:
        prompts = reasoning_prompts(args.items)
    samplings = [parse_member(s).sampling for s in CommitteeConfig().members]
    b = HFBackend(cfg.model)
    if args.adapter:
        b.load_adapter(args.adapter)
    longest = max(b.prompt_tokens(p) for p in prompts)
    print(
        f"device {b.device}, dtype {b.dtype}, autocast {b.autocast}, token budget "
        f"{b.batch_token_budget()}, decode rows {b.decode_rows(longest, args.max_new_tokens)}"
    )
    b.generate(prompts[-4:], samplings=samplings, max_new_tokens=4, progress=False)  # warm-up
    original = kv_cache.mergeable
    steps: list[int] = []
    forward = b.model.forward

    def counting_forward(*a, **k):
        ids = k.get("input_ids")
        if ids is not None and ids.shape[1] == 1:
            steps.append(ids.shape[0])
        return forward(*a, **k)

    b.model.forward = counting_forward
    arms = {"batch at a time": lambda cache: False, "continuous": original}
    results = {}
    for rep in range(args.pairs):
        for name, check in arms.items():
            kv_cache.mergeable = check
            steps.clear()
            t = time.perf_counter()
            gens = b.generate(
                prompts, samplings=samplings, max_new_tokens=args.max_new_tokens, progress=False
            )
            s = time.perf_counter() - t
            results[name] = [[g.token_ids for g in r] for r in gens]
            tokens = sum(len(x) for r in results[name] for x in r)
            print(
                json.dumps(
                    {
                        "round": rep,
                        "arm": name,
                        "seconds": round(s, 2),
                        "generated_tokens": tokens,
                        "decode_steps": len(steps),
                        "mean_rows_per_step": round(sum(steps) / max(1, len(steps)), 1),
                    }
                ),
                flush=True,
            )
    kv_cache.mergeable = original
    a, c = results.values()
    same = [sum(x[j] == y[j] for x, y in zip(a, c, strict=True)) for j in range(len(samplings))]
    print(f"token-identical replies per sampling: {same} of {len(prompts)}")


if __name__ == "__main__":
    main()
