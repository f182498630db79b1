"""The suite's log, sized for a pull request: one line per failing check with its file:line and fix, the failures of
one cause (every golden copy missing, one path unreachable) folded into one line with the count and the fix, and
the skipped checks counted by reason on one line. Pure functions of what the tests reported; the plugin prints them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import Problem

FAILED_TESTS_NAMED = 10  # above, the failed tests are counted on one line, a few of them named
RUNS_NAMED = 3  # runs named on a folded line
DETAIL_LINES = 20  # lines shown of the first failure of a folded multi-line cause (a diff)


@dataclass
class Cause:
    """Failures whose text is the same once the run and file are taken out."""

    line: str  # the first problem's first line, with the run as {run} and the file name as {file}
    first: Problem
    runs: list[str] = field(default_factory=list)
    count: int = 0


def cause_of(problem: Problem) -> str:
    """A problem's text with what differs between runs of one cause (the run's name, the file's name) as
    placeholders (a diff's lines too: two different diffs are two causes)."""
    text = problem.format()
    if problem.run:
        text = text.replace(problem.run, "{run}")
    if problem.file:
        name = os.path.basename(problem.file)
        if name:
            text = text.replace(name, "{file}")
    return text


def fold(problems: Iterable[Problem]) -> list[Cause]:
    """The problems grouped by cause, in the order each cause was first seen."""
    causes: dict[str, Cause] = {}
    for p in problems:
        key = cause_of(p)
        cause = causes.setdefault(key, Cause(key.splitlines()[0], p))
        cause.count += 1
        if p.run and p.run not in cause.runs:
            cause.runs.append(p.run)
    return list(causes.values())


def failure_lines(problems: Iterable[Problem]) -> list[str]:
    """One line per failing check (a diff in full), and one per cause that failed more than once."""
    out: list[str] = []
    for cause in fold(problems):
        if cause.count == 1:
            out += cause.first.format().splitlines()
            continue
        named = ", ".join(cause.runs[:RUNS_NAMED])
        more = f" and {len(cause.runs) - RUNS_NAMED} more" if len(cause.runs) > RUNS_NAMED else ""
        runs = f" in {len(cause.runs)} runs ({named}{more})" if cause.runs else ""
        out.append(f"{cause.count} x{runs}: {cause.line}")
        detail = cause.first.format().splitlines()[1:]
        if detail:
            out.append(f"  the first ({cause.first.run or cause.first.file}):")
            out += ["  " + line for line in detail[:DETAIL_LINES]]
            if len(detail) > DETAIL_LINES:
                out.append(f"  ... {len(detail) - DETAIL_LINES} more lines")
    return out


def failed_tests_lines(nodeids: list[str]) -> list[str]:
    """`FAILED nodeid` per failed test, or, above FAILED_TESTS_NAMED, one line counting them."""
    if len(nodeids) <= FAILED_TESTS_NAMED:
        return [f"FAILED {n}" for n in nodeids]
    names = ", ".join(n.rpartition("::")[2] for n in nodeids[:RUNS_NAMED])
    return [
        f"FAILED {len(nodeids)} tests: {names} and {len(nodeids) - RUNS_NAMED} more (each by name: --junitxml=FILE)"
    ]


def skips_line(skips: dict[tuple[str, str], int]) -> str | None:
    """Every skipped check on one line, counted by reason: `skipped 2003 checks: REASON: check x1000, ...; ...`."""
    if not skips:
        return None
    by_reason: dict[str, dict[str, int]] = {}
    for (check, reason), count in skips.items():
        checks = by_reason.setdefault(reason, {})
        checks[check] = checks.get(check, 0) + count
    ordered = sorted(by_reason.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    parts = [f"{reason} [{', '.join(f'{c} x{n}' for c, n in sorted(checks.items()))}]" for reason, checks in ordered]
    return f"skipped {sum(skips.values())} checks, by reason: " + "; ".join(parts)
