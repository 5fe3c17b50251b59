"""One frozen SmolLM2-135M decoder layer (random weights, no LoRA), forward + backward on an
fpb-sized batch (16 x 100 positions, float32, eager attention): how much of it is matmul, and
at what rate (BENCHMARKS.md, issue 5 session 13):

    python benchmarks/session13_ab/decoder_layer_profile.py

Prints the layer's median time, the torch profiler's share of ``aten::mm`` and ``aten::bmm``
in it (self CPU time, no shapes recorded), the rate of its seven projections' matmuls (input
gradients only, as for frozen weights) against this machine's float32 square-matmul rate.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # perf.py
from perf import matmul_gflops  # noqa: E402

from semievol.backends.allocator import retain_freed_memory  # noqa: E402

ROWS, POSITIONS = 16, 100


def main() -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    retain_freed_memory()  # as training runs
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=100000,
    )
    config._attn_implementation = "eager"
    layer = LlamaDecoderLayer(config, 0).requires_grad_(False)
    x = torch.randn(ROWS, POSITIONS, 576, requires_grad=True)
    positions = torch.arange(POSITIONS)[None].expand(ROWS, POSITIONS)
    cos_sin = LlamaRotaryEmbedding(config)(x, positions)
    causal = torch.full((POSITIONS, POSITIONS), float("-inf")).triu(1)
    mask = causal[None, None].expand(ROWS, 1, POSITIONS, POSITIONS)
    grad = torch.randn(ROWS, POSITIONS, 576)

    def step() -> None:
        out = layer(x, attention_mask=mask, position_embeddings=cos_sin, position_ids=positions)
        (out[0] if isinstance(out, tuple) else out).backward(grad)

    times = []
    for _ in range(21):
        x.grad = None
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times[1:])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            x.grad = None
            step()
    events = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(events.values())
    mm_seconds = events.get("aten::mm", 0.0) / 10 / 1e6
    projections = sum(m.weight.numel() for m in layer.modules() if isinstance(m, torch.nn.Linear))
    flops = 4 * projections * ROWS * POSITIONS  # forward + input gradient
    rate = matmul_gflops("float32")
    print(f"layer forward + backward: {seconds * 1e3:.1f} ms (median of 20)")
    print(
        f"profiler self CPU time: aten::mm {100 * events.get('aten::mm', 0) / total:.0f} %, "
        f"aten::bmm {100 * events.get('aten::bmm', 0) / total:.0f} %"
    )
    print(
        f"projection matmuls: {flops / mm_seconds / 1e9:.0f} GFLOP/s under the profiler, "
        f"square matmuls {rate:.0f} GFLOP/s: {flops / mm_seconds / 1e9 / rate:.0%}"
    )
    print(
        f"the projections' matmuls at that square rate: {flops / rate / 1e9 / seconds:.0%} of the layer"
    )


if __name__ == "__main__":
    main()
