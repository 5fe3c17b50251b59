"""RMSNorm as one hand-written autograd function, against transformers' composition
(BENCHMARKS.md, issue 5 session 13):

    python benchmarks/session13_ab/norm_ab.py --rows 96 --rounds 4

First one norm alone (16 x 100 x 576 float32, forward + backward, median of 50), then the
training step: forward + backward over fpb labeled rows at the default config, with the
model's 61 RMSNorms as they are (``hf``) or routed through the function (``fn``), arms
alternating in one process. The function computes the same values (largest difference
printed) in three passes forward and four backward, where the composition takes about a
dozen; the question is whether the step notices.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from step_setup import alternate_arms, training_step_setup


class RMSNormFunction(torch.autograd.Function):
    """weight * x / sqrt(mean(x^2) + eps) over the last dimension (float32)."""

    @staticmethod
    def forward(ctx: Any, x, weight, eps):  # noqa: ANN001
        d = x.shape[-1]
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).pow_(2).div_(d).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, r)
        return (x * r).mul_(weight)

    @staticmethod
    def backward(ctx: Any, grad):  # noqa: ANN001
        x, weight, r = ctx.saved_tensors
        d = x.shape[-1]
        gw = grad * weight
        coef = torch.linalg.vecdot(gw, x).unsqueeze(-1).mul_(r.pow(3)).div_(-d)
        grad_x = gw.mul_(r).addcmul_(x, coef)
        grad_weight = (grad * x * r).reshape(-1, d).sum(0) if ctx.needs_input_grad[1] else None
        return grad_x, grad_weight, None


def one_norm() -> None:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(576) + 0.5)
    norm.weight.requires_grad_(False)
    x = torch.randn(16, 100, 576, requires_grad=True)
    grad = torch.randn(16, 100, 576)
    ours = RMSNormFunction.apply(x, norm.weight, norm.variance_epsilon)
    theirs = norm(x)
    diffs = [(ours - theirs).detach().abs().max()]
    diffs.append(
        (torch.autograd.grad(ours, x, grad)[0] - torch.autograd.grad(theirs, x, grad)[0])
        .abs()
        .max()
    )
    print(f"largest difference, output and input gradient: {max(map(float, diffs)):.1e}")
    arms = {
        "hf": lambda: norm(x).backward(grad),
        "fn": lambda: RMSNormFunction.apply(x, norm.weight, norm.variance_epsilon).backward(grad),
    }
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(50):
        for name, fn in arms.items():
            x.grad = None
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(", ".join(f"{k} {statistics.median(v) * 1e3:.2f} ms" for k, v in times.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    one_norm()
    backend, net, batches, tokens = training_step_setup(args.rows)
    norms = [m for m in net.modules() if type(m).__name__.endswith("RMSNorm")]

    def use(arm: str) -> None:
        for m in norms:
            if arm == "fn":
                m.forward = lambda x, _m=m: RMSNormFunction.apply(x, _m.weight, _m.variance_epsilon)
            else:
                vars(m).pop("forward", None)

    rates = alternate_arms(backend, net, batches, tokens, ("hf", "fn"), use, args.rounds)
    print(f"{len(norms)} norms; tok/s hf " + " / ".join(f"{v:.1f}" for v in rates["hf"]))
    print("tok/s fn " + " / ".join(f"{v:.1f}" for v in rates["fn"]))


if __name__ == "__main__":
    main()
