"""A/B behind BENCHMARKS.md, issue 5 session 10: a free-form committee's generation (the
default members: greedy + two sampled at temperature 1) on fpb unlabeled prompts, three ways,
alternating in one process after a warm-up:

- "HF generate, per member": the code before 7f79173, reproduced below: transformers'
  ``generate`` on left-padded batches, one call per member, no shared prefix;
- "own loop, per member": ``HFBackend.generate`` with one sampling per call;
- "own loop, together": one call with the three samplings (what the committee does now).

    python benchmarks/session10_ab/generation_ab.py [--adapter DIR] [--items 64] [--pairs 3]
        [--float32]

Without an adapter the base model writes sentences (up to --max-new-tokens); with the SFT
adapter it answers with a letter. Prints seconds per arm and repetition, generated tokens, and
how many replies are token-identical between arms (per member).
"""

import argparse
import time

import torch

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.stages.committee import CommitteeConfig, parse_member
from semievol.tasks import build_task


def hf_generate(b, prompts, sampling, max_new_tokens):
    """The backend's generate before 7f79173: transformers' generate per batch."""
    texts = [b.render(p) for p in prompts]
    lengths = [len(b.tokens(t)) for t in texts]
    out = [None] * len(texts)
    sample = sampling.temperature > 0
    with b._inference() as net:
        for k, batch in enumerate(b._batches(lengths)):
            ids, mask, _ = b._left_pad([b.tokens(texts[i]) for i in batch])
            torch.manual_seed(sampling.seed * 1_000_003 + k)
            kw = (
                {"temperature": sampling.temperature, "top_p": 1.0, "top_k": 0}
                if sample
                else {"temperature": None, "top_p": None, "top_k": None}
            )
            res = net.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=b.pad_id,
                **kw,
            )
            new = res.sequences[:, ids.shape[1] :]
            raw = torch.stack(res.logits, dim=1).float()
            torch.log_softmax(raw, dim=-1).gather(-1, new[..., None])  # as the old code did
            eos = {b.tokenizer.eos_token_id, b.pad_id}
            for row, i in enumerate(batch):
                toks = []
                for t in new[row].tolist():
                    if t in eos:
                        break
                    toks.append(t)
                out[i] = toks
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--float32",
        action="store_true",
        help="no bf16 autocast: the own loop's two arms then give the same replies (same work)",
    )
    args = parser.parse_args()

    cfg = load_config("configs/fpb.yaml", {"model.autocast": "off"} if args.float32 else {})
    task = build_task(cfg.task)
    items = load_split(cfg.data, "unlabeled", task)[: args.items]
    prompts = [task.messages(e) for e in items]
    samplings = [parse_member(s).sampling for s in CommitteeConfig().members]
    b = HFBackend(cfg.model)
    if args.adapter:
        b.load_adapter(args.adapter)
    b.generate(prompts[-4:], samplings=samplings, max_new_tokens=4, progress=False)  # warm-up
    M = args.max_new_tokens
    arms = {
        "HF generate, per member": lambda: [hf_generate(b, prompts, s, M) for s in samplings],
        "own loop, per member": lambda: [
            [
                r[0].token_ids
                for r in b.generate(prompts, samplings=[s], max_new_tokens=M, progress=False)
            ]
            for s in samplings
        ],
        "own loop, together": lambda: [
            list(col)
            for col in zip(
                *[
                    [g.token_ids for g in r]
                    for r in b.generate(
                        prompts, samplings=samplings, max_new_tokens=M, progress=False
                    )
                ],
                strict=True,
            )
        ],
    }
    results = {}
    for rep in range(args.pairs):
        for name, run in arms.items():
            t = time.perf_counter()
            results[name] = run()
            s = time.perf_counter() - t
            tokens = sum(len(x) for member in results[name] for x in member)
            print(f"{rep} {name}: {s:.2f} s, {tokens} generated tokens", flush=True)
    names = list(arms)

    def identical(a, b):
        return [
            sum(x == y for x, y in zip(ma, mb, strict=True)) for ma, mb in zip(a, b, strict=True)
        ]

    # replies token-identical per member (bf16 autocast: batch composition moves near-ties)
    print(
        f"{names[0]} vs {names[1]}, greedy member: {identical(results[names[0]], results[names[1]])[0]} of {len(items)}"
    )
    print(
        f"{names[1]} vs {names[2]}, per member: {identical(results[names[1]], results[names[2]])} of {len(items)}"
    )


if __name__ == "__main__":
    main()
