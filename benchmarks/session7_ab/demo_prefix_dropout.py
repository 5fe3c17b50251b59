"""Few-label check behind BENCHMARKS.md, issue 5 session 7, "demo SFT" paragraph: SFT on the
demo's 40 labeled tickets (its settings: 6 epochs, lr 1e-3, batch 4, LoRA dropout 0.05) with
`model.share_prefix` false and true (with dropout, true shares the prefix's dropout mask across
a batch), seeds 0-2, each scored on 200 fresh tickets drawn from the demo generator with
another seed (not the demo's test split; tickets that occur in the demo's data are skipped):
`python benchmarks/session7_ab/demo_prefix_dropout.py`.
"""

import csv
import dataclasses
import tempfile
from pathlib import Path

from semievol.backends.hf import HFBackend
from semievol.commands.demo import DEMO_SIZES
from semievol.config import load_config
from semievol.data import load_split
from semievol.demo_data import DATA_COLUMNS, TASK, write_demo_data
from semievol.tasks import build_task
from semievol.training import sft_examples

with tempfile.TemporaryDirectory() as tmp:
    demo = write_demo_data(Path(tmp) / "demo", **DEMO_SIZES)
    seen = {
        row["question"]
        for path in demo.values()
        for row in csv.DictReader(path.open(encoding="utf-8"))
    }
    fresh = write_demo_data(Path(tmp) / "fresh", labeled=0, unlabeled=0, test=600, seed=1)
    rows = [r for r in csv.DictReader(fresh["test"].open(encoding="utf-8"))]
    rows = [r for r in rows if r["question"] not in seen][:200]
    val_path = Path(tmp) / "validation.csv"
    with val_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data = {"labeled": str(demo["labeled"]), "unlabeled": str(demo["unlabeled"])}
    data |= {"test": str(val_path)} | DATA_COLUMNS
    cfg = load_config(None, {}, base={"data": data, "task": TASK})
    task = build_task(cfg.task)
    train = sft_examples(task, load_split(cfg.data, "labeled", task))
    val = load_split(cfg.data, "test", task)
    prompts = [task.messages(e) for e in val]
    choices = [task.choices(e) for e in val]
    gold = [task.choice_answers(e).index(e.answer) for e in val]
    print(f"{len(train)} training tickets, {len(val)} validation tickets")
    for share in (False, True):
        backend = HFBackend(dataclasses.replace(cfg.model, share_prefix=share))
        accs = []
        for seed in (0, 1, 2):
            tc = dataclasses.replace(
                cfg.train, epochs=6, learning_rate=1e-3, batch_size=4, val_fraction=0.0, seed=seed
            )
            backend.train(train, tc, Path(tmp) / f"sft_{share}_{seed}", progress=False)
            probs = backend.score_choices(prompts, choices, progress=False)
            hits = sum(
                max(range(len(p)), key=p.__getitem__) == g for p, g in zip(probs, gold, strict=True)
            )
            accs.append(100 * hits / len(gold))
            print(f"share_prefix={share} seed {seed}: {accs[-1]:.1f} %", flush=True)
        print(f"share_prefix={share}: mean {sum(accs) / len(accs):.1f} %", flush=True)
