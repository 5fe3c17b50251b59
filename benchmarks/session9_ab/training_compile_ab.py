"""A/B behind BENCHMARKS.md, issue 5 session 9: LoRA training with torch.compile (regional:
each module compiled on its own, dynamic shapes) against eager, alternating in one process on
one backend: 1 epoch over 192 fpb labeled rows, default training config, a fresh adapter each
time. Prints the compile warm-up, then seconds, tokens/s and the epoch's mean training loss.

    python benchmarks/session9_ab/training_compile_ab.py layers   # whole decoder layers
    python benchmarks/session9_ab/training_compile_ab.py mlp      # MLPs and RMSNorms only
    python benchmarks/session9_ab/training_compile_ab.py mlp-native-dropout
        # the same, with PEFT's nn.Dropout in the compiled arm (BitsDropout's in-place
        # random_ breaks the graph; inductor generates nn.Dropout's mask inside its kernels)
"""

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import semievol.backends.hf as hf
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task
from semievol.training import sft_examples

mode = sys.argv[1] if len(sys.argv) > 1 else "layers"
if mode not in ("layers", "mlp", "mlp-native-dropout"):
    sys.exit(__doc__)
cfg = load_config("configs/fpb.yaml", {})
tc = dataclasses.replace(cfg.train, epochs=1, val_fraction=0.0, checkpoint_every=0)
b = hf.HFBackend(cfg.model)
task = build_task(cfg.task)
rows = sft_examples(task, load_split(cfg.data, "labeled", task)[:192])
if mode == "layers":
    modules = list(b.model.model.layers)
else:
    modules = [
        m
        for layer in b.model.model.layers
        for m in (layer.mlp, layer.input_layernorm, layer.post_attention_layernorm)
    ]
bits_dropout = hf.use_bits_dropout


def set_compiled(on: bool) -> None:
    if mode == "mlp-native-dropout":
        hf.use_bits_dropout = (lambda *a, **k: 0) if on else bits_dropout
    for m in modules:
        if on:
            m.compile(dynamic=True)
        else:
            m._compiled_call_impl = None


def train(examples: list) -> object:
    with tempfile.TemporaryDirectory() as d:
        return b.train(examples, tc, Path(d) / "a", progress=False)


train(rows[:32])  # eager warm-up
set_compiled(True)
t = time.perf_counter()
train(rows[:32])
print(f"{mode}: compile warm-up (32 rows) {time.perf_counter() - t:.1f} s", flush=True)
for rep in range(2):
    for on in (False, True):
        set_compiled(on)
        r = train(rows)
        print(
            f"rep {rep} compiled={on}: {r.seconds:.1f} s, {r.tokens / r.seconds:.0f} tok/s, "
            f"loss {r.history[-1]['loss']:.3f}",
            flush=True,
        )
