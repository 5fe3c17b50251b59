import os

import pytest

from semievol.data import Example
from semievol.tasks import TaskConfig, build_task

MC = build_task(TaskConfig(type="multiple_choice"))
EX = Example("q1", "How is the market?", ["negative", "neutral", "positive"], "B")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(C)", "C"),
        ("C) positive", "C"),
        ("A: negative", "A"),
        ("The answer is C.", "C"),
        ("Answer: A", "A"),
        ("answer: (b)", "B"),
        ("**B**", "B"),
        ("positive", "C"),
        ("The sentiment is neutral.", "B"),
        ("I think the answer is A, no wait, the answer is C", "C"),
    ],
)
def test_multiple_choice_extraction(text, expected):
    assert MC.extract(text, EX) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Answer: Based on the sentence, it is hard to say.",  # the reference scorer reads B here
        "A company reported profits.",  # leading article, not a letter
        "Based on the text",
        "D",  # not among the 3 options
        "",
        "negative or positive, hard to say",  # ambiguous between two options
    ],
)
def test_multiple_choice_extraction_refuses_non_answers(text):
    assert MC.extract(text, EX) is None


def test_multiple_choice_gold_parsing():
    opts = ["x", "y", "z", "w"]
    assert MC.parse_gold("c", opts) == "C"
    assert MC.parse_gold("2", opts) == "B"  # ARC-style numeric labels are 1-based
    assert MC.parse_gold("w", opts) == "D"
    for bad in ["E", "5", "0", "maybe"]:
        with pytest.raises(ValueError, match="not one of the 4 options"):
            MC.parse_gold(bad, opts)


def test_multiple_choice_prompt_lists_letters_and_instruction():
    msgs = MC.messages(EX, demos=[Example("d", "Demo?", ["a", "b", "c"], "A")])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "A"
    assert "A. negative\nB. neutral\nC. positive" in msgs[-1]["content"]
    assert "(A-C)" in msgs[-1]["content"]
    assert MC.choices(EX) == ["A", "B", "C"]


@pytest.mark.parametrize("kind", ["multiple_choice", "label_set", "numeric", "free_form"])
def test_instruction_position_first_puts_it_in_the_prefix_items_share(kind):
    labels = ["negative", "neutral", "positive"] if kind == "label_set" else None
    items = [
        Example("q1", "How is the market?", ["negative", "neutral", "positive"]),
        Example("q2", "Sales fell.", ["negative", "neutral", "positive"]),
    ]
    by_position = {}
    for position in ("first", "last"):
        task = build_task(TaskConfig(type=kind, labels=labels, instruction_position=position))
        users = [task.messages(ex)[-1]["content"] for ex in items]
        instruction = task.instruction_for(items[0])
        assert users[0].count(instruction) == 1
        by_position[position] = users
    first, last = by_position["first"], by_position["last"]
    assert first[0].startswith(f"{instruction}\n\nHow is the market?")
    assert last[0].startswith("How is the market?") and last[0].endswith(instruction)
    # Same parts, reordered: the prompts share the instruction as a prefix only when it is first.
    assert sorted(first[0].split("\n\n")) == sorted(last[0].split("\n\n"))
    assert os.path.commonprefix(first).startswith(instruction)
    assert os.path.commonprefix(last) == ""


LABELS = build_task(TaskConfig(type="label_set", labels=["negative", "neutral", "positive"]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("positive", "positive"),
        ("Positive.", "positive"),
        ("neutral - the sentence states facts", "neutral"),
        ("The sentiment is negative", "negative"),
        ("not sure", None),
        ("negative or positive", None),
    ],
)
def test_label_set_extraction(text, expected):
    assert LABELS.extract(text, EX) == expected


def test_label_set_gold_is_case_insensitive_and_checked():
    assert LABELS.parse_gold(" Neutral ", None) == "neutral"
    with pytest.raises(ValueError, match="not one of the labels"):
        LABELS.parse_gold("mixed", None)


NUM = build_task(TaskConfig(type="numeric"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 3.5", "3.5"),
        ("#### 1,234.75", "1,234.75"),
        ("so \\boxed{0.25}", "0.25"),
        ("First 2 apples, then 7.5 more", "7.5"),
        ("-12", "-12"),
        ("no number here", None),
    ],
)
def test_numeric_extraction_keeps_decimal_points(text, expected):
    assert NUM.extract(text, EX) == expected


def test_numeric_compare_with_tolerance_not_digit_stripping():
    assert NUM.is_correct("3.5", "3.50")
    assert NUM.is_correct("1,234.75", "1234.75")
    assert NUM.is_correct("3/4", "0.75")
    assert not NUM.is_correct("35", "3.5")  # stripping '.' would call this correct
    assert not NUM.is_correct(None, "1")
    with pytest.raises(ValueError, match="not a number"):
        NUM.parse_gold("three", None)


FREE = build_task(TaskConfig(type="free_form"))


def test_free_form_normalised_match():
    assert FREE.is_correct(FREE.extract("The answer is: The Eiffel Tower.", EX), "eiffel tower")
    assert not FREE.is_correct("Big Ben", "eiffel tower")


def test_custom_task_uses_template_and_pattern():
    task = build_task(
        TaskConfig(
            type="custom",
            prompt_template="Q: {question}\nReply 'Company: X'",
            answer_pattern=r"Company:\s*(.+)",
        )
    )
    msgs = task.messages(Example("1", "Nokia shares rise", None, "Nokia"))
    assert msgs[-1]["content"] == "Q: Nokia shares rise\nReply 'Company: X'"
    assert task.extract("Sure. Company: Nokia", EX) == "Nokia"
    assert task.extract("Nokia", EX) is None  # only what the pattern finds counts


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "label_set"}, "needs `labels`"),
        ({"type": "label_set", "labels": ["a", "A"]}, "distinct"),
        ({"type": "custom", "prompt_template": "{question}"}, "answer_pattern"),
        ({"answer_pattern": "([a-z"}, "not a valid regular expression"),
        ({"answer_pattern": "answer"}, "capturing group"),
        ({"prompt_template": "{question} {context}"}, "may only use"),
    ],
)
def test_task_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskConfig(**kwargs)
