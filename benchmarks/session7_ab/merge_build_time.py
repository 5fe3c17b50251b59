"""Time to build the merged copy of an SFT adapter's weights (BENCHMARKS.md, issue 5 session 7,
"merged adapter" row), three times in one process:
`python benchmarks/session7_ab/merge_build_time.py ADAPTER_DIR`.
"""

import sys
import time

from semievol.backends.hf import HFBackend
from semievol.backends.lora_merge import _adapter_layers
from semievol.config import load_config

cfg = load_config("configs/fpb.yaml", {})
backend = HFBackend(cfg.model)
backend.load_adapter(sys.argv[1])
layers = _adapter_layers(backend.peft, backend.active)
for _ in range(3):
    t0 = time.perf_counter()
    merged = backend._merged._build(layers, backend.active)
    print(f"{len(merged)} layers merged in {time.perf_counter() - t0:.2f} s", flush=True)
