"""Two LoRA savings that micro-benchmarks promise, in the training step (BENCHMARKS.md,
issue 5 session 13):

    python benchmarks/session13_ab/lora_update_ab.py --rows 96 --rounds 4

Forward + backward over fpb labeled rows at the default config, arms alternating in one
process:

- ``peft``: what training runs (PEFT's ``base(x) + lora_B(lora_A(dropout(x))) * scaling``
  with SparseDropout);
- ``addmm``: the update added into the base output by one in-place ``addmm_`` with the
  scaling as alpha (no scaled copy, no separate sum). In ``lora_linear_micro.py`` this takes
  8 % off the adapted linears' time;
- ``addmm+fast-draws``: also SparseDropout's gaps drawn as floor(log(1 - u) / log(1 - p)) + 1
  from float64 uniforms (the same Geometric(p) distribution) instead of ``geometric_``,
  which is ~2.4x slower per draw on this CPU.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from step_setup import alternate_arms, training_step_setup

import semievol.backends.lora_dropout as lora_dropout

ARMS = ("peft", "addmm", "addmm+fast-draws")
GEOMETRIC_DRAWS = lora_dropout.drop_positions


def addmm_forward(module: Any, x: torch.Tensor) -> torch.Tensor:
    name = module.active_adapters[0]
    result = module.base_layer(x)
    h = module.lora_A[name](module.lora_dropout[name](x))
    result.view(-1, result.shape[-1]).addmm_(
        h.view(-1, h.shape[-1]), module.lora_B[name].weight.T, alpha=module.scaling[name]
    )
    return result


def log_uniform_positions(
    n: int, p: float, device: torch.device | None = None, *, first_draw: int | None = None
) -> torch.Tensor:
    """drop_positions with the gaps from uniforms (first_draw ignored: not a test here)."""
    if n == 0 or p == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    log_q = math.log1p(-p)
    parts, last = [], -1
    while last < n:
        mean = (n - 1 - last) * p
        count = int(mean + 6 * math.sqrt(mean) + 16)
        gaps = torch.rand(count, dtype=torch.float64, device=device).neg_().log1p_()
        positions = gaps.div_(log_q).floor_().add_(1).to(torch.int64).cumsum_(0).add_(last)
        parts.append(positions)
        last = int(positions[-1])
    positions = torch.cat(parts) if len(parts) > 1 else parts[0]
    return positions[: int(torch.searchsorted(positions, n))]


def main() -> None:
    from peft.tuners.lora import Linear as LoraLinear

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    backend, net, batches, tokens = training_step_setup(args.rows)
    layers = [m for m in net.modules() if isinstance(m, LoraLinear)]

    def use(arm: str) -> None:
        for m in layers:
            if arm == "peft":
                vars(m).pop("forward", None)
            else:
                m.forward = lambda x, *_, _m=m, **__: addmm_forward(_m, x)
        fast = arm.endswith("fast-draws")
        lora_dropout.drop_positions = log_uniform_positions if fast else GEOMETRIC_DRAWS

    rates = alternate_arms(backend, net, batches, tokens, ARMS, use, args.rounds)
    for arm, values in rates.items():
        print(f"{arm}: " + " / ".join(f"{v:.1f}" for v in values) + " tok/s")


if __name__ == "__main__":
    main()
