"""The experiment's log, {experiment}/logs/scaffold-torchtune.log: appended, never truncated.

Lines are buffered per section and each section is appended with one write on an O_APPEND descriptor,
so sections of two processes writing at once never interleave within a line or a section.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..inputs import params

if TYPE_CHECKING:
    from ..plan import RunPlan

_STAMP: list = [None, ""]  # (centisecond, its text): a log of thousands of runs formats each time once


def now() -> str:
    t = time.time()
    tick = int(t * 100)
    if _STAMP[0] != tick:
        _STAMP[:] = [tick, datetime.fromtimestamp(tick / 100, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-4] + "Z"]
    return _STAMP[1]


class RunLog:
    """Timestamped lines, grouped in sections (one per invocation header, one per run)."""

    FLUSH_LINES = 2000  # flush_some() appends once this many lines are buffered (whole sections only)

    def __init__(self, path: Path | None, keep_open: bool = False):
        """`keep_open`: keep the file open between flushes, until close() (for thousands of sections)."""
        self.path = path
        self.keep_open = keep_open
        self._lines: list[str] = []
        self.error: str | None = None
        self._fd: int | None = None

    def line(self, level: str, message: str, run: str | None = None) -> None:
        head = f"{now()} {level:<5} {f'[{run}] ' if run else ''}"
        self._lines += [head + part for part in str(message).splitlines() or [""]]

    def info(self, message: str, run: str | None = None) -> None:
        self.line("INFO", message, run)

    def warning(self, message: str, run: str | None = None) -> None:
        self.line("WARN", message, run)

    def error_line(self, message: str, run: str | None = None) -> None:
        self.line("ERROR", message, run)

    def heading(self, title: str) -> None:
        self._lines.append(f"{now()} ===== {title}")

    def flush_some(self) -> None:
        """Call between sections: appends what is buffered once there is enough of it (a few writes for a
        sweep of thousands of runs instead of one per run)."""
        if len(self._lines) >= self.FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Append the buffered sections in one write."""
        if not self._lines:
            return
        text = ("\n".join(self._lines) + "\n").encode("utf-8")
        self._lines = []
        if self.path is None or self.error:
            return
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            view = memoryview(text)
            while view:
                view = view[os.write(self._fd, view) :]
            if not self.keep_open:
                self.close()
        except OSError as e:
            self.error = f"cannot write the log {self.path}: {e.strerror}"

    def close(self) -> None:
        """Flush, and close the log file (the next flush opens it again)."""
        if self._lines:
            self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- a run's settings, as the log gives them ----------------------------------------------------------------


def describe(rp: RunPlan, *, only: frozenset[str] | None = None, skip: frozenset[str] = frozenset()) -> str:
    """One line per parameter with its value and where it came from (for the log): every parameter, or those
    in `only`, less those in `skip`."""
    if not rp.setup:
        return ""
    return "\n".join(
        f"  {k} = {_log_value(rp.setup[k])} ({rp.sources[k]})"
        for k in params.table()
        if (only is None or k in only) and k not in skip
    )


def _log_value(value: Any) -> str:
    return json.dumps(value)


def shared_settings(runs: list[RunPlan]) -> frozenset[str]:
    """The parameters that every fine-tuned run of a sweep (two or more) sets alike, from the same place: the
    log gives them once, and each run's section only the others."""
    planned = [rp for rp in runs if rp.setup]
    if len(planned) < 2:
        return frozenset()
    first = planned[0]
    keys = set(params.table())
    for rp in planned[1:]:
        assert rp.setup is not None and first.setup is not None
        keys = {
            k
            for k in keys
            if rp.sources[k] == first.sources[k]
            and type(rp.setup[k]) is type(first.setup[k])
            and rp.setup[k] == first.setup[k]
        }
        if not keys:
            break
    return frozenset(keys)
