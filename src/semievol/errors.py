"""Errors that reach the user as one clear line each, never as a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class SemievolError(Exception):
    """Base class: the CLI prints the message and exits with code 2."""


class ConfigError(SemievolError):
    """A config file, flag or Python argument is invalid."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a run; the message says how to resume."""


class ModelLoadError(SemievolError):
    """A model, tokenizer or adapter could not be loaded."""


@dataclass(frozen=True)
class DataProblem:
    """One problem in a data file, located by file, 1-based data row and column."""

    file: str
    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f": row {self.row}"
        if self.column is not None:
            where += f": column {self.column!r}"
        return f"{where}: {self.message}"


class DataError(SemievolError):
    """A data file failed validation; carries every problem found, one line each."""

    def __init__(self, problems: list[DataProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
