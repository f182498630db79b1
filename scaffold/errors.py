"""Problems as values: every error names file, line, column, field path and fix, formatted in one place."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input or with one run, with where it is and how to fix it."""

    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    col: int | None = None  # 1-based
    field: str | None = None  # dotted path, e.g. runs[1].parameters.lora_rank
    fix: str | None = None
    run: str | None = None

    def format(self) -> str:
        """`file:line:col: [run NAME] field.path: message (fix: ...)`."""
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        run = f"[run {self.run}] " if self.run else ""
        fld = f"{self.field}: " if self.field else ""
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}{run}{fld}{self.message}{fix}"

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None} | {"text": self.format()}

    def with_run(self, run: str) -> Problem:
        return Problem(self.message, self.file, self.line, self.col, self.field, self.fix, run)


@dataclass
class InputError(Exception):
    """The inputs are invalid as a whole: nothing is written (exit status 2)."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(p.format() for p in self.problems)


class RunError(Exception):
    """One run cannot be generated; the other runs go on (exit status 1)."""

    def __init__(self, problems: Sequence[Problem]):
        super().__init__("\n".join(p.format() for p in problems))
        self.problems = list(problems)


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest known name to a misspelt one, or None."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    close = suggest(word, choices)
    if close:
        return f"did you mean '{close}'?"
    return "known names: " + ", ".join(choices)


def display_path(path: Path | str) -> str:
    """A path relative to the working directory when it is below it, else absolute."""
    absolute = os.path.abspath(path)  # no symlink resolution: called for every run of large sweeps
    cwd = _cwd()
    if absolute.startswith(cwd + os.sep):
        return absolute[len(cwd) + 1 :]
    real = os.path.realpath(absolute)
    return real[len(cwd) + 1 :] if real.startswith(cwd + os.sep) else str(path)


@cache
def _cwd() -> str:
    return os.path.realpath(os.getcwd())
