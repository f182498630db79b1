"""How checks report: a failing check raises CheckFailed with Problems; one that cannot run raises Blocked
(another check already fails for the cause) or NotApplicable (nothing to check here, e.g. --no-check-paths).

Every message is built here, so all read alike: `file:line: [run NAME] field: what: expected X, found Y (fix: ...)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import Problem, display_path

UNSET: Any = object()


class CheckFailed(Exception):
    """A check found something wrong; `problems` say what and where."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__(self.text())

    def text(self) -> str:
        return "\n".join(p.format() for p in self.problems)


class Blocked(Exception):
    """This check cannot run because an input it needs is broken; `by` names the check that fails for it."""

    def __init__(self, reason: str, by: str):
        super().__init__(f"{reason} (reported by {by})")
        self.reason = reason
        self.by = by


class NotApplicable(Exception):
    """Nothing to check for this target (the reason is printed with the skip)."""


def show(value: Any) -> str:
    """A value as a reader should see it in a message: strings quoted, numbers as written, None as null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def finding(
    message: str,
    *,
    run: str | None = None,
    file: Path | str | None = None,
    line: int | None = None,
    field: str | None = None,
    expected: Any = UNSET,
    found: Any = UNSET,
    fix: str | None = None,
) -> Problem:
    """One problem found by a check. `expected`/`found` are appended as `expected X, found Y`."""
    parts = [message]
    if expected is not UNSET:
        parts.append(f"expected {show(expected)}")
    if found is not UNSET:
        parts.append(f"found {show(found)}")
    text = parts[0] + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")
    where = display_path(file) if isinstance(file, Path) else file
    return Problem(text, where, line, None, field, fix, run)
