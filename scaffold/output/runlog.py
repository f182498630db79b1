"""The experiment's log, {experiment}/logs/scaffold-torchtune.log: appended, never truncated.

Lines are buffered per section and each section is appended with one write on an O_APPEND descriptor,
so sections of two processes writing at once never interleave within a line or a section.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

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
