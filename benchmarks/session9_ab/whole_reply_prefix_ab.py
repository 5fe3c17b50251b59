"""A/B behind BENCHMARKS.md, issue 5 session 9: whole-reply scoring (label names as answers, the
demo task's scoring) with and without the shared prompt prefix, alternating in one process on
one backend: the demo's 300 unlabeled tickets with the SFT adapter of a `make demo` run (merged,
the default), 3 pairs; prints seconds and the largest probability difference between the arms,
then each arm's largest difference to float32 (no autocast, unmerged, no shared prefix).

    make demo   # once, for runs/demo
    python benchmarks/session9_ab/whole_reply_prefix_ab.py [RUN_DIR]
"""

import dataclasses
import sys
import time

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

run = sys.argv[1] if len(sys.argv) > 1 else "runs/demo"
cfg = load_config(f"{run}/semievol_config.yaml", {})
task = build_task(cfg.task)
assert task.full_sequence_scoring, "this A/B is about whole-reply scoring"
items = load_split(cfg.data, "unlabeled", task)
prompts, choices = [task.messages(e) for e in items], [task.choices(e) for e in items]
b = HFBackend(cfg.model)
b.load_adapter(f"{run}/sft/train/adapter")
seqs = [b.tokens(b.render(m)) for m in prompts]
shared = b._shared_prefix_length(seqs, min(map(len, seqs)) - 1)
print(f"{len(seqs)} prompts, {sum(map(len, seqs)) / len(seqs):.1f} tokens each, {shared} shared")
b.score_choices(prompts[:8], choices[:8], full_sequence=True, progress=False)  # warm-up
for rep in range(3):
    out = {}
    for share in (False, True):
        b.config.share_prefix = share
        t0 = time.perf_counter()
        out[share] = b.score_choices(prompts, choices, full_sequence=True, progress=False)
        print(f"rep {rep} share_prefix={share}: {time.perf_counter() - t0:.2f} s", flush=True)
    diff = max(
        abs(x - y)
        for a, c in zip(out[False], out[True], strict=True)
        for x, y in zip(a, c, strict=True)
    )
    agree = sum(
        max(range(len(a)), key=a.__getitem__) == max(range(len(c)), key=c.__getitem__)
        for a, c in zip(out[False], out[True], strict=True)
    )
    print(f"rep {rep}: max |p_shared - p_whole| {diff:.3f}, argmax agreement {agree}/{len(items)}")

ref_cfg = dataclasses.replace(cfg.model, autocast="off", merge_adapters=False, share_prefix=False)
ref_backend = HFBackend(ref_cfg)
ref_backend.load_adapter(f"{run}/sft/train/adapter")
ref = ref_backend.score_choices(prompts, choices, full_sequence=True, progress=False)
for share in (False, True):
    err = max(
        abs(x - y) for a, c in zip(out[share], ref, strict=True) for x, y in zip(a, c, strict=True)
    )
    agree = sum(
        max(range(len(a)), key=a.__getitem__) == max(range(len(c)), key=c.__getitem__)
        for a, c in zip(out[share], ref, strict=True)
    )
    print(
        f"share_prefix={share}: max |p - p_float32| {err:.3f}, argmax agreement {agree}/{len(items)}"
    )
