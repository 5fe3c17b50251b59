"""A/B behind BENCHMARKS.md, issue 5 session 9: inference with each layer's norm outputs rounded
to bf16 once (`HFBackend._bf16_norm_outputs_in_inference`) against autocast casting them in every
linear that reads them. Alternating in one process on one backend with the SFT adapter ADAPTER
(merged, the default): first-token scoring of 256 fpb unlabeled items, 5 pairs, with the largest
probability difference to the first run; then one torch profile of each; with `training`, also 3
pairs of 1 epoch over 192 labeled rows with the hooks active in training too (the variant that
was not adopted: there the 5 input gradients are summed in bf16).

    python benchmarks/session9_ab/norm_bf16_ab.py ADAPTER [training]
"""

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples

if len(sys.argv) < 2:
    sys.exit(__doc__)
adapter, training = sys.argv[1], sys.argv[2:] == ["training"]
HFBackend._bf16_norm_outputs_in_inference = lambda self: None  # this script's hooks instead
cfg = load_config("configs/fpb.yaml", {})
b = HFBackend(cfg.model)
b.load_adapter(adapter)
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:256]
prompts, choices = [task.messages(e) for e in items], [task.choices(e) for e in items]
ON = [False]


def to_bf16(module: torch.nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
    if ON[0] and (training or not torch.is_grad_enabled()) and torch.is_autocast_enabled("cpu"):
        return output.to(torch.get_autocast_dtype("cpu"))
    return output


for layer in b.model.model.layers:
    layer.input_layernorm.register_forward_hook(to_bf16)
    layer.post_attention_layernorm.register_forward_hook(to_bf16)

if training:
    tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
    rows = sft_examples(task, load_split(cfg.data, "labeled", task)[:192])
    for rep in range(3):
        for on in (False, True):
            ON[0] = on
            with tempfile.TemporaryDirectory() as d:
                r = b.train(rows, tc, Path(d) / "a", progress=False)
            print(
                f"rep {rep} bf16 norms={on}: training {r.seconds:.1f} s, "
                f"{r.tokens / r.seconds:.0f} tok/s, loss {r.history[-1]['loss']:.4f}",
                flush=True,
            )
    sys.exit()

b.score_choices(prompts[:16], choices[:16], progress=False)  # warm-up
first = None
for rep in range(5):
    for on in (False, True):
        ON[0] = on
        t0 = time.perf_counter()
        p = b.score_choices(prompts, choices, progress=False)
        seconds = time.perf_counter() - t0
        first = first or p
        diff = max(
            abs(x - y) for a, c in zip(p, first, strict=True) for x, y in zip(a, c, strict=True)
        )
        print(f"rep {rep} bf16 norms={on}: {seconds:.2f} s, max |p - first| {diff:.1e}", flush=True)
for on in (False, True):
    ON[0] = on
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        b.score_choices(prompts, choices, progress=False)
    print(f"bf16 norms={on}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
