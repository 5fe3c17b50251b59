"""Data layer: read labeled / unlabeled / test sets and validate them row by row.

Sources: ``.csv``/``.tsv``, ``.jsonl``, ``.json`` (a list of records), ``.parquet``, a directory
written by ``datasets.save_to_disk``, or ``hf:NAME[:SPLIT]`` for a Hugging Face hub dataset.
Every problem is reported as ``file: row N: column 'c': what is wrong`` (rows count data records
from 1, header excluded). The gold column of unlabeled data goes to ``Example.audit_gold``, which
only the pseudo-label audit reads.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from semievol.errors import DataError, DataProblem

if TYPE_CHECKING:
    from semievol.tasks import Task

Split = Literal["labeled", "unlabeled", "test"]
MAX_PROBLEMS_SHOWN = 25


@dataclass
class DataConfig:
    labeled: str | None = None
    """Labeled data: .csv/.tsv/.jsonl/.json/.parquet, a `datasets` directory, or hf:NAME[:SPLIT]."""
    unlabeled: str | None = None
    """Unlabeled data (same formats). A gold column, if present, is used only for auditing."""
    test: str | None = None
    """Held-out test data for evaluation (same formats)."""
    question_column: str = "question"
    """Column holding the question or input text."""
    options_column: str | None = "options"
    """Column holding the answer options as a JSON or Python list (multiple-choice tasks)."""
    answer_column: str = "answer"
    """Column holding the gold answer (a letter, a 1-based option number or the option text for
    multiple choice; the label, number or text otherwise)."""
    id_column: str | None = None
    """Column of unique row ids (null: ids are the split name and row number)."""
    unlabeled_gold_column: str | None = "answer"
    """Column of the unlabeled file with gold answers, read only to audit pseudo-labels; ignored
    when absent from the file."""
    labeled_limit: int | None = None
    """Use only the first N labeled rows."""
    unlabeled_limit: int | None = None
    """Use only the first N unlabeled rows."""
    test_limit: int | None = None
    """Use only the first N test rows."""

    def __post_init__(self) -> None:
        for name in ("labeled_limit", "unlabeled_limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {value}")
        if not self.question_column or not self.answer_column:
            raise ValueError("question_column and answer_column must be non-empty")

    def path_of(self, split: Split) -> str | None:
        return getattr(self, split)

    def limit_of(self, split: Split) -> int | None:
        return getattr(self, f"{split}_limit")


@dataclass
class Example:
    """One validated item. ``answer`` is None for unlabeled items."""

    id: str
    question: str
    options: list[str] | None = None
    answer: str | None = None
    audit_gold: str | None = field(default=None, repr=False)
    """Gold answer of an unlabeled item: for the audit only, never for training or prompting."""


# --- reading raw records ---------------------------------------------------------------------


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            [
                DataProblem(
                    str(path), f"not valid UTF-8 (byte {e.start}, line {line}); save it as UTF-8"
                )
            ]
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise DataError([DataProblem(str(path), "permission denied")]) from None
    except OSError as e:
        raise DataError([DataProblem(str(path), f"cannot read: {e.strerror}")]) from None


def _read_csv(path: Path, delimiter: str) -> tuple[list[dict[str, Any]], list[str]]:
    text = _decode(path, _read_bytes(path))
    if not text.strip():
        raise DataError([DataProblem(str(path), "file is empty")])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        rows = []
        for i, values in enumerate(reader, start=1):
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) != len(header):
                raise DataError(
                    [
                        DataProblem(
                            str(path),
                            f"has {len(values)} fields but the header has {len(header)}",
                            row=i,
                        )
                    ]
                )
            rows.append(dict(zip(header, values, strict=True)))
    except csv.Error as e:
        raise DataError(
            [DataProblem(str(path), f"malformed CSV near line {reader.line_num}: {e}")]
        ) from None
    header = [h.strip() for h in header]
    rows = [{k.strip(): v for k, v in r.items()} for r in rows]
    if len(set(header)) != len(header):
        dup = next(h for h, c in Counter(header).items() if c > 1)
        raise DataError([DataProblem(str(path), f"header repeats column {dup!r}")])
    return rows, header


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    text = _decode(path, _read_bytes(path))
    if not text.strip():
        raise DataError([DataProblem(str(path), "file is empty")])
    rows, problems = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(DataProblem(str(path), f"invalid JSON: {e.msg}", row=line_no))
            continue
        if not isinstance(record, dict):
            problems.append(DataProblem(str(path), "expected a JSON object", row=line_no))
            continue
        rows.append(record)
    if problems:
        raise DataError(problems)
    return rows, _columns(rows)


def _read_json(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    text = _decode(path, _read_bytes(path))
    if not text.strip():
        raise DataError([DataProblem(str(path), "file is empty")])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            [DataProblem(str(path), f"invalid JSON at line {e.lineno}: {e.msg}")]
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError([DataProblem(str(path), "expected a JSON list of objects")])
    return data, _columns(data)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)


def _read_parquet(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            [
                DataProblem(
                    str(path), "reading Parquet needs pyarrow: pip install 'semievol[datasets]'"
                )
            ]
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError([DataProblem(str(path), f"cannot read Parquet: {e}")]) from None
    return table.to_pylist(), table.column_names


def _read_hf(spec: str, path_label: str) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            [
                DataProblem(
                    path_label, "Hugging Face datasets need: pip install 'semievol[datasets]'"
                )
            ]
        ) from None
    try:
        if spec.startswith("hf:"):
            name, _, split = spec[3:].partition(":")
            ds = datasets.load_dataset(name, split=split or "train")
        else:
            ds = datasets.load_from_disk(spec)
            if isinstance(ds, datasets.DatasetDict):
                raise DataError(
                    [DataProblem(path_label, f"holds several splits {list(ds)}; point at one")]
                )
    except DataError:
        raise
    except Exception as e:  # network, missing dataset, bad split ...
        raise DataError([DataProblem(path_label, f"cannot load dataset: {e}")]) from None
    return ds.to_list(), list(ds.column_names)


def read_records(source: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Raw records and column names of a data source, or DataError."""
    if source.startswith("hf:"):
        return _read_hf(source, source)
    path = Path(source)
    if not path.exists():
        raise DataError([DataProblem(source, "file not found")])
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return _read_hf(str(path), source)
        raise DataError([DataProblem(source, "is a directory, expected a data file")])
    if not os.access(path, os.R_OK):
        raise DataError([DataProblem(source, "permission denied")])
    suffix = path.suffix.lower()
    readers = {
        ".csv": lambda: _read_csv(path, ","),
        ".tsv": lambda: _read_csv(path, "\t"),
        ".jsonl": lambda: _read_jsonl(path),
        ".json": lambda: _read_json(path),
        ".parquet": lambda: _read_parquet(path),
    }
    if suffix not in readers:
        raise DataError(
            [
                DataProblem(
                    source,
                    f"unknown file type {suffix!r}; use .csv, .tsv, .jsonl, .json or .parquet",
                )
            ]
        )
    rows, columns = readers[suffix]()
    if not rows:
        raise DataError([DataProblem(source, "has no data rows")])
    return rows, columns


# --- validation ------------------------------------------------------------------------------


def parse_options(value: Any) -> list[str]:
    """Options from a list, a JSON list string or a Python list literal; ValueError otherwise."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("options are empty")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise ValueError(
                    f"cannot parse options {_clip(text)!r}: expected a JSON list like "
                    '["yes", "no"] or a Python list'
                ) from None
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise ValueError(f"options must be a list, got {type(value).__name__}")
    options = []
    for i, opt in enumerate(value):
        if isinstance(opt, bool) or not isinstance(opt, str | int | float):
            raise ValueError(f"option {i + 1} is a {type(opt).__name__}, expected text")
        text = str(opt).strip()
        if "\x00" in text:
            raise ValueError(f"option {i + 1} contains a NUL byte")
        if not text:
            raise ValueError(f"option {i + 1} is empty")
        options.append(text)
    if len(options) < 2:
        raise ValueError(f"need at least 2 options, got {len(options)}")
    if len(options) > 26:
        raise ValueError(f"at most 26 options (A-Z) are supported, got {len(options)}")
    return options


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _cell(value: Any) -> str | None:
    """A cell as text; None when missing or empty."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from Parquet / pandas exports
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL byte (a binary file or a broken export?)")
        return value if value.strip() else None
    raise TypeError(type(value).__name__)


class _BadRow(Exception):
    """The row has a problem, already recorded; skip it."""


def _parse_row(
    record: dict[str, Any],
    row: int,
    split: Split,
    config: DataConfig,
    task: Task,
    gold_column: str | None,
    problems: list[tuple[str | None, str]],
) -> Example | None:
    """One validated Example, or None with (column, message) pairs appended to ``problems``."""

    def fail(column: str | None, message: str) -> _BadRow:
        problems.append((column, message))
        return _BadRow()

    def text_of(column: str) -> str | None:
        try:
            return _cell(record.get(column))
        except TypeError as e:
            raise fail(column, f"expected text, got a {e}") from None
        except ValueError as e:
            raise fail(column, str(e)) from None

    try:
        question = text_of(config.question_column)
        if question is None:
            raise fail(config.question_column, "question is empty")
        options = None
        if task.needs_options:
            raw_options = record.get(config.options_column)  # type: ignore[arg-type]
            if raw_options is None or (
                isinstance(raw_options, float) and raw_options != raw_options
            ):
                raise fail(config.options_column, "options are empty")
            try:
                options = parse_options(raw_options)
            except ValueError as e:
                raise fail(config.options_column, str(e)) from None
        answer = audit_gold = None
        raw_answer = text_of(gold_column) if gold_column else None
        if split == "unlabeled":
            if raw_answer is not None:
                # a bad audit label only loses that item's audit
                with contextlib.suppress(ValueError):
                    audit_gold = task.parse_gold(raw_answer, options)
        elif raw_answer is None:
            raise fail(gold_column, "answer is empty")
        else:
            try:
                answer = task.parse_gold(raw_answer, options)
            except ValueError as e:
                raise fail(gold_column, str(e)) from None
        item_id = f"{split}-{row}"
        if config.id_column:
            raw_id = text_of(config.id_column)
            if raw_id is None:
                raise fail(config.id_column, "id is empty")
            item_id = raw_id.strip()
    except _BadRow:
        return None
    return Example(item_id, question, options, answer, audit_gold)


def load_split(config: DataConfig, split: Split, task: Task) -> list[Example]:
    """Read and validate one split; raises DataError listing every problem found."""
    source = config.path_of(split)
    if source is None:
        raise DataError([DataProblem(f"data.{split}", "no file configured")])
    rows, columns = read_records(source)
    limit = config.limit_of(split)
    if limit is not None:
        rows = rows[:limit]

    needs_answer = split != "unlabeled"
    required = [config.question_column]
    if needs_answer:
        required.append(config.answer_column)
    if task.needs_options:
        if not config.options_column:
            raise DataError([DataProblem(source, "this task needs data.options_column")])
        required.append(config.options_column)
    if config.id_column:
        required.append(config.id_column)
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            [
                DataProblem(
                    source,
                    f"missing column {c!r} (columns present: {', '.join(map(repr, columns))}); "
                    f"set data.{_setting_for(config, c)} to the right name",
                    column=c,
                )
                for c in missing
            ]
        )
    gold_column = config.unlabeled_gold_column if split == "unlabeled" else config.answer_column
    has_gold = gold_column is not None and gold_column in columns

    problems: list[DataProblem] = []
    examples: list[Example] = []
    first_row_of_id: dict[str, int] = {}
    for i, record in enumerate(rows, start=1):
        found: list[tuple[str | None, str]] = []
        example = _parse_row(
            record, i, split, config, task, gold_column if has_gold else None, found
        )
        if example is not None and example.id in first_row_of_id:
            found.append(
                (
                    config.id_column,
                    f"duplicate id {example.id!r} (first at row {first_row_of_id[example.id]})",
                )
            )
        elif example is not None:
            first_row_of_id[example.id] = i
            examples.append(example)
        problems.extend(
            DataProblem(source, message, row=i, column=column) for column, message in found
        )
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(DataProblem(source, f"... and {len(problems) - len(shown)} more problems"))
        raise DataError(shown)
    return examples


def _setting_for(config: DataConfig, column: str) -> str:
    for name in ("question_column", "options_column", "answer_column", "id_column"):
        if getattr(config, name) == column:
            return name
    return "question_column"


def load_splits(
    config: DataConfig, task: Task, splits: Sequence[Split]
) -> dict[str, list[Example]]:
    """Load several splits, collecting the problems of all of them before failing."""
    out: dict[str, list[Example]] = {}
    problems: list[DataProblem] = []
    for split in splits:
        try:
            out[split] = load_split(config, split, task)
        except DataError as e:
            problems.extend(e.problems)
    if problems:
        raise DataError(problems)
    return out


def _item_key(ex: Example) -> str:
    # Question and options: "Which of the following is true?" with other options is another item.
    parts = [ex.question, *(ex.options or [])]
    return "\x1f".join(" ".join(p.lower().split()) for p in parts)


def find_overlap(a: Sequence[Example], b: Sequence[Example]) -> int:
    """Number of items of ``b`` that also appear in ``a`` (same question and options: leakage)."""
    seen = {_item_key(ex) for ex in a}
    return sum(_item_key(ex) in seen for ex in b)


def summarize(examples: Sequence[Example], task: Task, *, audit: bool = False) -> dict[str, Any]:
    """Counts and label distribution of one split."""
    from semievol.tasks import class_namer

    name = class_namer(task, examples)
    answers = [ex.audit_gold if audit else ex.answer for ex in examples]
    dist = Counter(name(a) for a in answers if a is not None)
    lengths = [len(ex.question) for ex in examples]
    return {
        "rows": len(examples),
        "with_answer": sum(a is not None for a in answers),
        "label_distribution": dict(sorted(dist.items())),
        "question_chars_mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
        "question_chars_max": max(lengths, default=0),
    }
