"""Count behind BENCHMARKS.md, issue 5 session 10: tokens the committee's first-token scoring
computes on fpb unlabeled items (after each chunk's shared prefix, padding included) when its
64-item chunks are taken in file order (before the change), by characters of question and
options (evaluation's order before), shortest first in tokens (``shortest_first``, now), or all
items in one call; batches as the backend forms them (``model.batch_size: auto``).
Deterministic: no timing.

    python benchmarks/session10_ab/chunk_padding.py
"""

from semievol.backends.hf import HFBackend
from semievol.config import load_config
from semievol.data import load_split
from semievol.evaluation import shortest_first
from semievol.tasks import build_task

cfg = load_config("configs/fpb.yaml", {})
task = build_task(cfg.task)
unlabeled = load_split(cfg.data, "unlabeled", task)
b = HFBackend(cfg.model)


def work(examples, chunk):
    real = computed = 0
    for s in range(0, len(examples), chunk):
        seqs = [b.tokens(b.render(task.messages(e))) for e in examples[s : s + chunk]]
        shared = b._shared_prefix_length(seqs, min(len(x) for x in seqs) - 1)
        lengths = [len(x) - shared for x in seqs]
        for batch in b._batches(lengths):
            real += sum(lengths[i] for i in batch)
            computed += len(batch) * max(lengths[i] for i in batch)
    return real, computed


def by_characters(examples):
    """The order evaluation used before ee79057 (and shortest_first's first, uncommitted form)."""
    return sorted(examples, key=lambda ex: len(ex.question) + sum(len(o) for o in ex.options or []))


for n in (256, len(unlabeled)):
    items = unlabeled[:n]
    for name, examples, chunk in [
        ("64-item chunks, file order", items, 64),
        ("64-item chunks, by characters of question and options", by_characters(items), 64),
        ("64-item chunks, shortest first", shortest_first(b, items, task.messages), 64),
        ("one call", items, n),
    ]:
        real, computed = work(examples, chunk)
        print(
            f"{n} items, {name}: {computed} tokens computed for {real} ({1 - real / computed:.1%} padding)"
        )
