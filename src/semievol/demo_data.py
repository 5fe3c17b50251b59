"""A small sample task generated on the spot, so the demo runs offline on any machine.

Support-ticket routing: each ticket goes to one of four teams. Tickets are built from templates
with class-specific problems and class-neutral context, so the base model is unsure of the
routing conventions while a little fine-tuning learns them.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from semievol.io import atomic_write_text

TEAMS = ["Billing", "Logistics", "Platform engineering", "Trust and safety"]

PROBLEMS = {
    "Billing": [
        "I was charged twice for my {plan} subscription",
        "the invoice for {month} shows the wrong VAT number",
        "my refund for order {order} never arrived on my card",
        "you billed me after I cancelled in {month}",
        "the discount code was not applied to my {plan} renewal",
        "I need a copy of the receipt for order {order}",
        "the price on my statement is higher than the {plan} plan page says",
        "my card was declined but the money still left my account",
    ],
    "Logistics": [
        "my parcel for order {order} has been stuck in transit for {days} days",
        "the courier left the package at the wrong address",
        "order {order} arrived with a broken box and missing items",
        "the tracking number for order {order} does not work",
        "I want to change the delivery date of order {order}",
        "the return label for order {order} was never emailed to me",
        "the delivery driver did not ring and took the parcel back",
        "half of order {order} came and the rest is nowhere",
    ],
    "Platform engineering": [
        "the app crashes every time I open the {page} page",
        "I get error {code} when I try to upload a file",
        "the {page} page has been loading forever since the update",
        "sync between my phone and laptop stopped working",
        "the API returns error {code} for every request since {month}",
        "notifications no longer show up after the latest version",
        "exports to CSV come out empty on the {page} page",
        "search returns nothing even for items I can see",
    ],
    "Trust and safety": [
        "someone logged into my account from another country",
        "I received a message asking for my password that looked like it came from you",
        "a seller is posting fake listings with my photos",
        "my account was used to send spam to my contacts",
        "another user keeps harassing me in the comments",
        "I think my two-factor codes are being intercepted",
        "a listing on the site is selling counterfeit goods",
        "somebody changed my recovery email without asking me",
    ],
}

OPENERS = [
    "Hello,",
    "Hi team,",
    "Good morning.",
    "To whom it may concern:",
    "Hey there,",
    "Dear support,",
    "",
]
CONTEXT = [
    "I have been a customer for {years} years.",
    "This is the second time I write about this.",
    "I am writing from my work email.",
    "My colleague had the same issue last week.",
    "I already tried logging out and back in.",
    "Please answer quickly, it is urgent.",
    "",
    "",
]
CLOSERS = ["Thanks.", "Regards, {name}", "Please help.", "Cheers, {name}", "", "What should I do?"]
FILL = {
    "plan": ["Basic", "Pro", "Family", "Business"],
    "month": ["January", "March", "June", "September", "November"],
    "order": ["#4821", "#1190", "#7734", "#5502", "#9023", "#3318"],
    "days": ["5", "9", "12", "20"],
    "page": ["settings", "dashboard", "reports", "profile"],
    "code": ["500", "403", "E-17", "0x2F"],
    "years": ["two", "three", "five", "ten"],
    "name": ["Ana", "Tom", "Priya", "Lukas", "Mei", "Omar"],
}

QUESTION = "Which team should handle this support ticket?\n\nTicket: {ticket}"

# The demo's task config: answer with the team's name.
TASK = {"type": "label_set", "labels": TEAMS}
DATA_COLUMNS = {
    "id_column": "id",
    "options_column": None,
    "answer_column": "team",
    "unlabeled_gold_column": "team",
}


def _fill(rng: random.Random, template: str) -> str:
    return template.format(**{k: rng.choice(v) for k, v in FILL.items()})


def make_ticket(rng: random.Random, team: str) -> str:
    problem = _fill(rng, rng.choice(PROBLEMS[team]))
    parts = [
        rng.choice(OPENERS),
        problem[0].upper() + problem[1:] + ".",
        _fill(rng, rng.choice(CONTEXT)),
        _fill(rng, rng.choice(CLOSERS)),
    ]
    return " ".join(p for p in parts if p)


def write_demo_data(
    out_dir: str | Path, *, labeled: int = 200, unlabeled: int = 600, test: int = 200, seed: int = 0
) -> dict[str, Path]:
    """Write labeled / unlabeled / test CSVs (unlabeled keeps its gold columns for the audit).

    The gold team is in two forms: ``team`` (the name, for the label-set task the demo runs) and
    ``answer`` (the letter of ``options``, to try the same data as multiple choice).
    """
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    paths = {}
    for split, size in (("labeled", labeled), ("unlabeled", unlabeled), ("test", test)):
        rows = []
        while len(rows) < size:
            team_index = rng.randrange(len(TEAMS))
            ticket = make_ticket(rng, TEAMS[team_index])
            if ticket in seen:  # no overlap between splits
                continue
            seen.add(ticket)
            rows.append(
                {
                    "id": f"{split}-{len(rows) + 1}",
                    "question": QUESTION.format(ticket=ticket),
                    "options": json.dumps(TEAMS),
                    "answer": "ABCD"[team_index],
                    "team": TEAMS[team_index],
                }
            )
        path = out / f"{split}.csv"
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=["id", "question", "options", "answer", "team"])
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buffer.getvalue())
        paths[split] = path
    return paths
