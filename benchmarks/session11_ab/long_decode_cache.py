"""Micro-benchmark behind BENCHMARKS.md, issue 5 session 11: decode steps with transformers'
``DynamicLayer`` (each step concatenates, copying the layer's whole cache) against
``kv_cache.InPlaceLayer`` (each step writes its position into spare room), for one batch of
fpb prompts decoded greedily for ``--steps`` steps (base model). The decode loop is the plain
one below, so only the cache layer differs between the arms.

    python benchmarks/session11_ab/long_decode_cache.py [--rows 16] [--steps 1024]
        [--profile]

Prints ms per step for every 128 steps and the cache width reached; with ``--profile`` also
the operators' share of 8 steps at the end (torch profiler).
"""

import argparse
import time

import torch
from plain_decode import GreedySteps

from semievol.backends.hf import HFBackend
from semievol.backends.kv_cache import InPlaceLayer
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task


def decode(b, net, seqs, prefix, steps, in_place, profile):
    out, mask = b._prompt_pass(net, seqs, prefix)
    cache = out.past_key_values
    if in_place:
        cache.layers = [
            InPlaceLayer(
                torch.nn.functional.pad(layer.keys, (0, 0, 0, steps + 8)),
                torch.nn.functional.pad(layer.values, (0, 0, 0, steps + 8)),
                layer.keys.shape[2],
            )
            for layer in cache.layers
        ]
    decoder = GreedySteps(net, out, mask)
    step = decoder.step

    t = time.perf_counter()
    total = 0.0
    for s in range(steps):
        step()
        if s % 128 == 127:
            now = time.perf_counter()
            total += now - t
            print(
                f"  steps {s - 127}-{s}: {(now - t) / 128 * 1e3:.1f} ms/step, width {decoder.mask.shape[1]}"
            )
            t = now
    print(f"  total {total:.1f} s")
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(8):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cfg = load_config("configs/fpb.yaml")
    task = build_task(cfg.task)
    items = load_split(cfg.data, "unlabeled", task)[: max(2, args.rows)]
    b = HFBackend(cfg.model)
    seqs = [b.tokens(b.render(task.messages(ex))) for ex in items]
    with b._inference() as net:
        prefix = b._prefix_cache(net, seqs)
        for in_place in (False, True):
            print("InPlaceLayer" if in_place else "DynamicLayer (torch.cat per step)")
            decode(b, net, seqs[: args.rows], prefix, args.steps, in_place, args.profile)


if __name__ == "__main__":
    main()
