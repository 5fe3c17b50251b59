"""Timing behind BENCHMARKS.md, issue 5 session 9: semievol's committee and self-justification
stages on the first 256 fpb unlabeled items with the SFT adapter ADAPTER, twice, then a cProfile
of the second justification step (cumulative time, top 25).

    python benchmarks/session9_ab/justify_profile.py ADAPTER
"""

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.pipeline import inference_chunk
from semievol.stages.committee import collect_votes, committee_members
from semievol.stages.justify import resolve_committee
from semievol.tasks import build_task

if len(sys.argv) != 2:
    sys.exit(__doc__)
cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
items = load_split(cfg.data, "unlabeled", task)[:256]
b = HFBackend(cfg.model)
b.load_adapter(sys.argv[1])
warm = items[-8:]
b.score_choices([task.messages(e) for e in warm], [task.choices(e) for e in warm], progress=False)
members = committee_members(cfg.committee, in_context=True, collaborative=True)
chunk = inference_chunk(cfg.model)
for rep in range(2):
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        logs = collect_votes(
            b,
            task,
            items,
            members,
            demos_for=lambda m, ex: [],
            adapter_for=lambda m: b.active,
            stage_dir=Path(tmp) / "committee",
            chunk_size=chunk,
            max_new_tokens=cfg.committee.max_new_tokens,
        )
        t1 = time.perf_counter()
        profiler = cProfile.Profile()
        profiler.enable()
        finals = resolve_committee(
            b,
            task,
            items,
            [log.records for log in logs],
            justify=True,
            labeler=b.active,
            stage_dir=Path(tmp) / "justify",
            chunk_size=chunk,
            max_new_tokens=cfg.committee.max_new_tokens,
        )
        profiler.disable()
        justified = sum(f["source"] == "justification" for f in finals)
        print(
            f"rep {rep}: votes {t1 - t0:.2f} s, justification {time.perf_counter() - t1:.2f} s "
            f"({justified} items)"
        )
pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
