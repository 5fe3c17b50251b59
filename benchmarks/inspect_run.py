"""Figures of one SemiEvol run directory that BENCHMARKS.md quotes beyond report.md.

Usage: python benchmarks/inspect_run.py RUN_DIR [ROUND]

Reads only the run's artifacts (committee votes, final pseudo-labels with their audit gold,
the manifest) and prints: each committee member's vote counts and accuracy, how answer sources
split between kept and rejected, the class mix of unanimous answers, how often a justified answer
equals each member's vote, the precision each member alone would reach with per-class top-50 %
entropy selection (the default selection), and the mean top-1 cosine of the kNN neighbours.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from semievol.evaluation import entropy
from semievol.stages.selection import SelectionConfig, select_pseudo_labels


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def member_alone_precision(votes: list[dict], gold: dict) -> str:
    """Precision of one member's votes under the default selection (θ=0.5, per class, by
    entropy), i.e. what the pipeline would keep if this member labeled alone."""
    finals = [
        {"id": v["id"], "answer": v["vote"], "score": entropy(list(v["distribution"].values()))}
        for v in votes
    ]
    decisions = select_pseudo_labels(finals, SelectionConfig(), closed_set=True)
    kept = [v for v in votes if decisions[v["id"]].kept]
    correct = sum(v["vote"] == gold[v["id"]] for v in kept)
    return f"{correct / max(1, len(kept)) * 100:.1f} % of {len(kept)}"


def main(run_dir: str, round_number: str = "1") -> None:
    rnd = Path(run_dir) / f"round{round_number}"
    records = read_jsonl(rnd / "select/pseudo_labels.jsonl")
    gold = {r["id"]: r.get("audit_gold") for r in records}
    print(f"{len(records)} items, {sum(g is not None for g in gold.values())} with audit gold")
    for i in range(len(records[0]["votes"])):
        votes = read_jsonl(rnd / f"committee/member{i}.jsonl")
        correct = sum(v["vote"] == gold[v["id"]] for v in votes if gold[v["id"]] is not None)
        print(
            f"member {i} ({records[0]['votes'][i]['member']}): "
            f"votes {dict(sorted(Counter(v['vote'] for v in votes).items()))}, "
            f"accuracy {correct / len(votes) * 100:.1f} %"
        )
        if "distribution" in votes[0]:
            print(
                f"  alone, default selection (per-class top-50 % by entropy): {member_alone_precision(votes, gold)}"
            )
    print(
        "source × kept:", dict(sorted(Counter((r["source"], r["kept"]) for r in records).items()))
    )
    unanimous = [r for r in records if r["source"] == "unanimous"]
    print(
        "unanimous answers by class:", dict(sorted(Counter(r["answer"] for r in unanimous).items()))
    )
    justified = [r for r in records if r["source"] == "justification"]
    for i in range(len(records[0]["votes"])):
        same = sum(r["answer"] == r["votes"][i]["vote"] for r in justified)
        print(f"justified answers equal to member {i}'s vote: {same} of {len(justified)}")
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    neighbors = manifest["stages"].get(f"round{round_number}/neighbors")
    if neighbors:
        print(
            f"mean top-1 cosine of kNN neighbours: {neighbors['outputs']['mean_top1_cosine']:.3f}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
