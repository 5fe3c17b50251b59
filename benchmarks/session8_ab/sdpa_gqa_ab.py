"""A/B behind the session-8 note on issue 5: first-token scoring of 256 fpb unlabeled items
with an SFT adapter, transformers' SDPA with repeat_kv vs torch SDPA's native GQA
(TRANSFORMERS_SDPA_FORCE_GQA=1, read per call), 6 alternating pairs in one process; then the
largest probability difference between the two (0.0: bit-identical).

    python benchmarks/session8_ab/sdpa_gqa_ab.py ADAPTER_DIR
"""

import os
import sys
import time

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.tasks import build_task

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:256]
p = [task.messages(e) for e in items]
c = [task.choices(e) for e in items]
b = HFBackend(cfg.model)
b.load_adapter(sys.argv[1])
b.score_choices(p[:16], c[:16], progress=False)
res = {}
for rep in range(6):
    for mode in ("0", "1"):
        os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = mode
        t = time.perf_counter()
        res[mode] = b.score_choices(p, c, progress=False)
        s = time.perf_counter() - t
        print(rep, "gqa" if mode == "1" else "repeat_kv", f"{s:.2f} s", flush=True)
d = max(
    abs(x - y) for a, bb in zip(res["0"], res["1"], strict=True) for x, y in zip(a, bb, strict=True)
)
print("largest probability difference", d)
