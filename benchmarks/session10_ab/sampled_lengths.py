"""Check behind BENCHMARKS.md, issue 5 session 10: do replies sampled by the backend's own
decode loop have the same length distribution as transformers' ``generate``? The base model
(no adapter, it writes sentences) samples 64 fpb unlabeled prompts at temperature 1, up to 64
new tokens, with seeds 1-6, both ways (the ``generate`` path is ``hf_generate`` from
generation_ab.py, the code before 7f79173). Prints the running mean reply length and how many
replies reached the 64-token cap.

    python benchmarks/session10_ab/sampled_lengths.py
"""

import importlib.util
import statistics
from pathlib import Path

from semievol.backends import Sampling
from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

spec = importlib.util.spec_from_file_location(
    "generation_ab", Path(__file__).with_name("generation_ab.py")
)
generation_ab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generation_ab)
hf_generate = generation_ab.hf_generate

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
prompts = [task.messages(e) for e in load_split(cfg.data, "unlabeled", task)[:64]]
b = HFBackend(cfg.model)
hf, own = [], []
for seed in range(1, 7):
    s = Sampling(1.0, seed=seed)
    hf += [len(t) for t in hf_generate(b, prompts, s, 64)]
    own += [
        len(r[0].token_ids)
        for r in b.generate(prompts, samplings=[s], max_new_tokens=64, progress=False)
    ]
    print(
        f"seeds 1-{seed}: mean length {statistics.mean(hf):.2f} (generate) vs "
        f"{statistics.mean(own):.2f} (own loop); at the cap {sum(x == 64 for x in hf)} vs "
        f"{sum(x == 64 for x in own)} of {len(hf)}; sd {statistics.stdev(hf):.1f} / "
        f"{statistics.stdev(own):.1f}",
        flush=True,
    )
