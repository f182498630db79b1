"""The experiment's log, {experiment}/logs/scaffold-torchtune.log: appended, never truncated.

Lines are buffered per section and each section is appended with one write on an O_APPEND descriptor,
so sections of two processes writing at once never interleave within a line or a section.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

LOG_DIR = "logs"
LOG_NAME = "scaffold-torchtune.log"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class RunLog:
    """Timestamped lines, grouped in sections (one per invocation header, one per run)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lines: list[str] = []
        self.error: str | None = None

    def line(self, level: str, message: str, run: str | None = None) -> None:
        head = f"{now()} {level:<5} {f'[{run}] ' if run else ''}"
        self._lines += [head + part for part in str(message).splitlines() or [""]]

    def info(self, message: str, run: str | None = None) -> None:
        self.line("INFO", message, run)

    def error_line(self, message: str, run: str | None = None) -> None:
        self.line("ERROR", message, run)

    def heading(self, title: str) -> None:
        self._lines.append(f"{now()} ===== {title}")

    def flush(self) -> None:
        """Append the buffered section in one write."""
        if not self._lines:
            return
        text = ("\n".join(self._lines) + "\n").encode("utf-8")
        self._lines = []
        if self.path is None or self.error:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
        except OSError as e:
            self.error = f"cannot write the log {self.path}: {e.strerror}"
