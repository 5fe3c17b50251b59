"""Task types: each owns its prompt rendering, gold-answer parsing, answer extraction and checking.

A prompt is a list of chat messages; the backend renders it with the tokenizer's chat template, and
training uses the very same rendering with the answer as the assistant turn. Few-shot
demonstrations are earlier user/assistant turns of the same conversation.

Canonical answers: multiple choice → the option letter ("B"); label set → the label as written in
the config ("positive"); numeric → the number as written ("3.50"); free form / custom → the text.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from semievol.data import Example

LETTERS = string.ascii_uppercase

DEFAULT_SYSTEM_PROMPT = "You are a careful expert. Reply with the answer only."


@dataclass
class TaskConfig:
    type: Literal["multiple_choice", "label_set", "numeric", "free_form", "custom"] = (
        "multiple_choice"
    )
    """multiple_choice: options in the data, answers are letters; label_set: a fixed set of labels
    (``labels``), answers are label texts; numeric: a number compared with a tolerance; free_form:
    short text compared after normalisation; custom: your ``prompt_template`` and
    ``answer_pattern`` with normalised comparison."""
    labels: list[str] | None = None
    """The closed label set of a label_set task, e.g. [negative, neutral, positive]."""
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    """System message of every prompt (null: the chat template's default). A short one saves
    tokens on every prompt."""
    instruction: str | None = None
    """Line telling the model how to answer (null: the task type's default)."""
    instruction_position: Literal["first", "last"] = "last"
    """Where the instruction goes in the user message. last: after the question and its
    options, next to where the answer starts. first: before the question; it then joins the
    token prefix all items share, which training computes once per batch (fpb: LoRA training
    1.2x faster, scoring no faster), but SmolLM2-135M fitted fpb more slowly with it (1-epoch
    loss 0.77 vs 0.67; BENCHMARKS.md, issue 5 session 8), so it is not the default."""
    prompt_template: str | None = None
    """Override the user message: a Python format string with {question}, {options} (lettered
    lines) and {labels} (comma-separated)."""
    answer_pattern: str | None = None
    """Regular expression whose first group extracts the answer from generated text (tried
    before the task type's own extraction)."""
    scoring: Literal["auto", "first_token", "sequence"] = "auto"
    """How closed-set answers are scored. first_token: next-token probabilities of the
    candidates' first tokens (one pass; right for option letters); sequence: probability of each
    whole reply including its end-of-turn marker (a cached second pass; compares whole labels,
    not just their first tokens, which may be shared or be bare letters). auto: first_token for
    multiple_choice, sequence for label_set."""
    numeric_rel_tol: float = 1e-4
    """Relative tolerance of numeric answers."""
    numeric_abs_tol: float = 1e-6
    """Absolute tolerance of numeric answers."""

    def __post_init__(self) -> None:
        if self.type == "label_set":
            if not self.labels or len(self.labels) < 2:
                raise ValueError("a label_set task needs `labels` with at least two labels")
            lowered = [lab.strip().lower() for lab in self.labels]
            if len(set(lowered)) != len(lowered) or not all(lowered):
                raise ValueError(f"labels must be distinct and non-empty: {self.labels}")
        if self.type == "custom" and not (self.prompt_template and self.answer_pattern):
            raise ValueError("a custom task needs both `prompt_template` and `answer_pattern`")
        if self.answer_pattern is not None:
            try:
                compiled = re.compile(self.answer_pattern)
            except re.error as e:
                raise ValueError(f"answer_pattern is not a valid regular expression: {e}") from None
            if compiled.groups < 1:
                raise ValueError("answer_pattern needs one capturing group around the answer")
        if self.prompt_template is not None:
            try:
                self.prompt_template.format(question="", options="", labels="")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(
                    f"prompt_template may only use {{question}}, {{options}} and {{labels}}: {e}"
                ) from None
        if self.numeric_rel_tol < 0 or self.numeric_abs_tol < 0:
            raise ValueError("numeric tolerances must be >= 0")


class Task(Protocol):
    """What the data layer, backends and evaluation need from a task type."""

    config: TaskConfig
    needs_options: bool
    full_sequence_scoring: bool

    def parse_gold(self, raw: str, options: Sequence[str] | None) -> str:
        """Canonical answer from a data cell; ValueError with a user-facing reason if invalid."""
        ...

    def messages(
        self, ex: Example, demos: Sequence[Example] = (), *, inline_demos: bool = False
    ) -> list[dict[str, str]]:
        """Chat messages that ask ``ex``, with demonstrations as earlier chat turns or, with
        ``inline_demos``, as solved examples inside the one user message."""
        ...

    def target(self, ex: Example, answer: str) -> str:
        """The assistant reply that states ``answer``: the training target."""
        ...

    def choices(self, ex: Example) -> list[str] | None:
        """Closed-set replies to score (index-aligned with ``choice_answers``), or None."""
        ...

    def choice_answers(self, ex: Example) -> list[str]:
        """Canonical answers of ``choices``."""
        ...

    def extract(self, text: str, ex: Example) -> str | None:
        """Canonical answer stated in generated text, or None when there is none."""
        ...

    def is_correct(self, pred: str | None, gold: str) -> bool: ...


# --- shared pieces ---------------------------------------------------------------------------


def format_options(options: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))


def _normalise(text: str) -> str:
    text = text.lower().strip()
    text = re.sub(r"[\s]+", " ", text)
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


# "The answer is B", "Answer: (C)", "option D" — the letter must stand alone, so that
# "Answer: Based on ..." is not read as B.
_STATED_LETTER = re.compile(
    r"\b(?:answer|option|choice)\b(?:\s+is|\s+would\s+be|\s*:|\s*-)?\s*[\(\[\*]*([A-Z])(?![A-Za-z0-9'])",
    re.IGNORECASE,
)
_LEADING_LETTER = re.compile(r"^[\s\*\(\[]*([A-Z])(?:\s*$|[\)\]\.:,](?!\w)|[\)\]\.:]\s)")


@dataclass
class _Base:
    config: TaskConfig = field(default_factory=TaskConfig)

    needs_options = False
    default_instruction = "Answer with the final answer only."

    def _system(self) -> list[dict[str, str]]:
        sp = self.config.system_prompt
        return [{"role": "system", "content": sp}] if sp else []

    def user_message(self, ex: Example, *, with_instruction: bool = True) -> str:
        options = format_options(ex.options) if ex.options else ""
        labels = ", ".join(self.config.labels or [])
        if self.config.prompt_template is not None:
            return self.config.prompt_template.format(
                question=ex.question, options=options, labels=labels
            )
        parts = [ex.question.strip()]
        if options:
            parts.append(options)
        if with_instruction and self.config.instruction_position == "first":
            parts.insert(0, self.instruction(ex))
        elif with_instruction:
            parts.append(self.instruction(ex))
        return "\n\n".join(parts)

    def instruction(self, ex: Example) -> str:
        return self.config.instruction or self.instruction_for(ex)

    def instruction_for(self, ex: Example) -> str:
        return self.default_instruction

    def messages(
        self, ex: Example, demos: Sequence[Example] = (), *, inline_demos: bool = False
    ) -> list[dict[str, str]]:
        msgs = self._system()
        for demo in demos:
            if demo.answer is None:
                raise ValueError(f"demonstration {demo.id!r} has no answer")
        if inline_demos and demos:
            solved = "\n\n".join(
                f"{self.user_message(d, with_instruction=False)}\nAnswer: {self.target(d, d.answer)}"  # type: ignore[arg-type]
                for d in demos
            )
            # Instruction first: it opens the whole message, not the question after the demos.
            first = self.config.instruction_position == "first"
            question = self.user_message(ex, with_instruction=not first)
            content = (
                f"Solved examples of similar questions:\n\n{solved}\n\nNow this one:\n\n{question}"
            )
            if first and self.config.prompt_template is None:
                content = f"{self.instruction(ex)}\n\n{content}"
            return [*msgs, {"role": "user", "content": content}]
        for demo in demos:
            msgs.append({"role": "user", "content": self.user_message(demo)})
            msgs.append({"role": "assistant", "content": self.target(demo, demo.answer)})  # type: ignore[arg-type]
        msgs.append({"role": "user", "content": self.user_message(ex)})
        return msgs

    def target(self, ex: Example, answer: str) -> str:
        return answer

    @property
    def full_sequence_scoring(self) -> bool:
        if self.config.scoring == "auto":
            return self.config.type == "label_set"
        return self.config.scoring == "sequence"

    def choices(self, ex: Example) -> list[str] | None:
        return None

    def choice_answers(self, ex: Example) -> list[str]:
        return []

    def _pattern(self, text: str) -> str | None:
        if self.config.answer_pattern is None:
            return None
        m = re.search(self.config.answer_pattern, text, re.IGNORECASE | re.DOTALL)
        return m.group(1).strip() if m and m.group(1) is not None else None


@dataclass
class MultipleChoiceTask(_Base):
    needs_options = True

    def instruction_for(self, ex: Example) -> str:
        last = LETTERS[len(ex.options or []) - 1]
        return f"Answer with the letter (A-{last}) of the correct option only."

    def parse_gold(self, raw: str, options: Sequence[str] | None) -> str:
        n = len(options or [])
        value = raw.strip()
        if len(value) == 1 and value.upper() in LETTERS[:n]:
            return value.upper()
        # Some datasets (ARC) label options 1..N instead of A..N.
        if value.isdigit() and 1 <= int(value) <= n:
            return LETTERS[int(value) - 1]
        matches = [i for i, opt in enumerate(options or []) if opt.strip() == value]
        if len(matches) == 1:
            return LETTERS[matches[0]]
        raise ValueError(
            f"answer {raw!r} is not one of the {n} options: expected a letter A-{LETTERS[n - 1]},"
            f" a number 1-{n} or an option's exact text"
        )

    def choices(self, ex: Example) -> list[str]:
        return list(LETTERS[: len(ex.options or [])])

    def choice_answers(self, ex: Example) -> list[str]:
        return self.choices(ex)

    def extract(self, text: str, ex: Example) -> str | None:
        valid = LETTERS[: len(ex.options or [])]
        candidate = self._pattern(text)
        if candidate is not None:
            return self._letter_or_option(candidate, ex, valid)
        m = _LEADING_LETTER.match(text)
        if m and m.group(1) in valid:
            return m.group(1)
        stated = [m.group(1).upper() for m in _STATED_LETTER.finditer(text)]
        stated = [s for s in stated if s in valid]
        if stated:
            return stated[-1]  # a final "so the answer is C" overrides earlier mentions
        return self._letter_or_option(text, ex, valid)

    def _letter_or_option(self, text: str, ex: Example, valid: str) -> str | None:
        stripped = text.strip().strip("*().[]:").strip()
        if len(stripped) == 1 and stripped.upper() in valid:
            return stripped.upper()
        m = re.match(r"^([A-Z])[\.\):]\s", text.strip())
        if m and m.group(1) in valid:
            return m.group(1)
        norm = _normalise(text)
        if not norm:
            return None
        exact = [i for i, opt in enumerate(ex.options or []) if _normalise(opt) == norm]
        if len(exact) == 1:
            return valid[exact[0]]
        found = [
            i
            for i, opt in enumerate(ex.options or [])
            if _normalise(opt) and re.search(rf"\b{re.escape(_normalise(opt))}\b", norm)
        ]
        return valid[found[0]] if len(found) == 1 else None

    def is_correct(self, pred: str | None, gold: str) -> bool:
        return pred is not None and pred == gold


@dataclass
class LabelSetTask(_Base):
    def labels(self) -> list[str]:
        return list(self.config.labels or [])

    def instruction_for(self, ex: Example) -> str:
        return f"Answer with one of: {', '.join(self.labels())}."

    def parse_gold(self, raw: str, options: Sequence[str] | None) -> str:
        value = raw.strip().lower()
        for lab in self.labels():
            if lab.strip().lower() == value:
                return lab
        raise ValueError(f"answer {raw!r} is not one of the labels {self.labels()}")

    def choices(self, ex: Example) -> list[str]:
        return self.labels()

    def choice_answers(self, ex: Example) -> list[str]:
        return self.labels()

    def extract(self, text: str, ex: Example) -> str | None:
        candidate = self._pattern(text)
        if candidate is not None:
            text = candidate
        low = text.lower()
        # A label counts only when it is the only one named: "negative or positive" is no answer.
        found = {lab for lab in self.labels() if re.search(rf"\b{re.escape(lab.lower())}\b", low)}
        return found.pop() if len(found) == 1 else None

    def is_correct(self, pred: str | None, gold: str) -> bool:
        return pred is not None and pred.lower() == gold.lower()


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
_NUMBER_TOKEN = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d+|\.\d+)(?:/\d+)?"
)


def parse_number(text: str) -> float | None:
    """Parse '1,234.5', '-0.25', '3/4', '12%' (as 12); None if it is not a number."""
    value = text.strip().rstrip("%").replace("$", "").strip()
    if "/" in value:
        num, _, den = value.partition("/")
        a, b = parse_number(num), parse_number(den)
        return a / b if a is not None and b not in (None, 0) else None
    if not value or not _NUMBER.fullmatch(value):
        return None
    try:
        return float(value.replace(",", ""))
    except ValueError:
        return None


@dataclass
class NumericTask(_Base):
    default_instruction = "Answer with the final number only."

    def parse_gold(self, raw: str, options: Sequence[str] | None) -> str:
        if parse_number(raw) is None:
            raise ValueError(f"answer {raw!r} is not a number")
        return raw.strip()

    def extract(self, text: str, ex: Example) -> str | None:
        candidate = self._pattern(text)
        if candidate is not None:
            return candidate if parse_number(candidate) is not None else None
        for pattern in (r"\\boxed\{([^}]*)\}", r"####\s*(\S+)", r"answer(?:\s+is|\s*:)\s*\$?(\S+)"):
            m = re.search(pattern, text, re.IGNORECASE)
            if m:
                value = m.group(1).rstrip(".,;")
                if parse_number(value) is not None:
                    return value
        numbers = _NUMBER_TOKEN.findall(text)
        return numbers[-1] if numbers else None

    def is_correct(self, pred: str | None, gold: str) -> bool:
        if pred is None:
            return False
        a, b = parse_number(pred), parse_number(gold)
        if a is None or b is None:
            return False
        return math.isclose(
            a, b, rel_tol=self.config.numeric_rel_tol, abs_tol=self.config.numeric_abs_tol
        )


@dataclass
class FreeFormTask(_Base):
    default_instruction = "Answer in a few words only."

    def parse_gold(self, raw: str, options: Sequence[str] | None) -> str:
        if not _normalise(raw):
            raise ValueError(f"answer {raw!r} is empty after normalisation")
        return raw.strip()

    def extract(self, text: str, ex: Example) -> str | None:
        candidate = self._pattern(text)
        if candidate is not None:
            return candidate or None
        if self.config.type == "custom":
            return None  # a custom task's answer is only what its pattern finds
        m = re.search(r"answer(?:\s+is|\s*:)\s*(.+)", text, re.IGNORECASE)
        line = (m.group(1) if m else text).strip().splitlines()
        return line[0].strip().rstrip(".") if line and line[0].strip() else None

    def is_correct(self, pred: str | None, gold: str) -> bool:
        return pred is not None and _normalise(pred) == _normalise(gold)


def is_closed_set(task: Task, examples: Sequence[Example]) -> bool:
    """Whether every example has a closed set of candidate answers (scored, not generated)."""
    return all(task.choices(ex) is not None for ex in examples)


def class_namer(task: Task, examples: Sequence[Example]) -> Callable[[str | None], str]:
    """Readable class of an answer, for per-class counts: 'B (neutral)' when every item has the
    same options, else the answer itself; '(no answer)' for None."""
    names: dict[str, str] = {}
    first = examples[0].options if examples else None
    if first and all(ex.options == first for ex in examples):
        answers = task.choice_answers(examples[0])
        names = {a: f"{a} ({opt})" for a, opt in zip(answers, first, strict=True)}

    def name(answer: str | None) -> str:
        return "(no answer)" if answer is None else names.get(answer, answer)

    return name


def build_task(config: TaskConfig) -> Task:
    kinds: dict[str, type] = {
        "multiple_choice": MultipleChoiceTask,
        "label_set": LabelSetTask,
        "numeric": NumericTask,
        "free_form": FreeFormTask,
        "custom": FreeFormTask,
    }
    return kinds[config.type](config)
