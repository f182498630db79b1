"""How every command reports: it returns its result, and `reply(result)` in its module turns that into a `Reply`
(the report for people or the JSON document on stdout, the errors on stderr, the exit status), which the CLI prints
with `print_reply`. Progress lines printed while a command runs (submit's, one per run) come before it."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import Problem


@dataclass(frozen=True)
class Reply:
    """What a command prints when it is done: `out` on stdout, then `err` on stderr; `status` is its exit status
    (0 success, 1 some run or file failed, 2 invalid input, nothing done: each command's epilog says)."""

    status: int
    out: str = ""
    err: str = ""


def errors(problems: Iterable[Problem]) -> str:
    """Problems as the commands print them on stderr: `error: FILE:LINE:COL: ...`, one a line."""
    return "".join(f"error: {p.format()}\n" for p in problems)


def print_reply(reply: Reply) -> int:
    """Print a command's reply; its exit status."""
    if reply.out:
        print(reply.out, end="", flush=True)
    if reply.err:
        print(reply.err, end="", file=sys.stderr, flush=True)
    return reply.status
